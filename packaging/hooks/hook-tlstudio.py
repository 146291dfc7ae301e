"""PyInstaller hook for TL Studio itself.

- Every ``tlstudio`` submodule is bundled, since the GUI pages and the engine
  are imported inside functions (to keep start-up fast) and may be missed.
- ``tlstudio.resources`` lives in the top-level ``resources/`` folder (see
  ``package-dir`` in ``pyproject.toml``), which the module graph cannot find
  from an editable install; its files, ``__init__.py`` included, are copied to
  ``tlstudio/resources`` in the bundle, where ``importlib.resources`` finds them.
- The package metadata is copied so ``importlib.metadata.version("tlstudio")``
  (shown in ``--version``, the self-test and model cards) works when frozen.
"""

from pathlib import Path

from PyInstaller.utils.hooks import collect_submodules, copy_metadata

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
RESOURCE_PATTERNS = ("__init__.py", "*.svg", "*.png", "*.qss", "*.ico")

hiddenimports = collect_submodules("tlstudio", filter=lambda name: not name.startswith("tlstudio.resources"))
datas = [
    (str(path), "tlstudio/resources")
    for pattern in RESOURCE_PATTERNS
    for path in sorted(RESOURCES.glob(pattern))
]
datas += copy_metadata("tlstudio")
