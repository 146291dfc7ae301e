"""Where TL Studio keeps its files: runs, caches and converted weights.

Everything lives in the platform's user directories (platformdirs), never next
to the code. ``TLSTUDIO_HOME`` moves all of it to one folder (tests, servers);
``KERAS_HOME`` is honoured for Keras' own model cache as Keras does.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "tlstudio"


def _home() -> Path | None:
    value = os.environ.get("TLSTUDIO_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Runs and converted weights (kept until the user deletes them)."""
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Caches that can be rebuilt at any time (feature cache, thumbnails)."""
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    """The default parent folder of run folders."""
    return data_dir() / "runs"


def keras_models_dir() -> Path:
    """Keras' model cache (``~/.keras/models``), where ImageNet weights are looked for first."""
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home).expanduser() if keras_home else Path.home() / ".keras"
    return base / "models"
