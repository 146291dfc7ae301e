"""Shared fixtures: a tiny VGG-shaped model and generated image folders.

Qt runs offscreen and TensorFlow is kept quiet and on the CPU so the suite is
the same on every machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path

import pytest

from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path_factory, monkeypatch):
    """Keep caches, runs and Keras' model cache out of the real home folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("TLSTUDIO_HOME", str(home / "tlstudio"))
    monkeypatch.setenv("KERAS_HOME", str(home / "keras"))
    return home


@pytest.fixture
def image_root(tmp_path) -> Path:
    """A folder with three class sub-folders of 12 generated 48x48 PNGs each."""
    return make_sample_folders(tmp_path / "images")


@pytest.fixture
def tiny_vgg():
    """A VGG-shaped model at 32x32 without the fully-connected top."""
    return make_tiny_vgg()


@pytest.fixture
def tiny_vgg_top():
    """A VGG-shaped model at 32x32 with flatten, fc1, fc2 and predictions."""
    return make_tiny_vgg(include_top=True)


@pytest.fixture
def tiny_vgg_file(tmp_path) -> Path:
    """The tiny VGG saved as a user's own ``.keras`` model file."""
    path = tmp_path / "tiny_vgg.keras"
    make_tiny_vgg().save(path)
    return path


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs to fill up (skipped where mounting is not allowed)."""
    import subprocess

    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
