"""Bundle tf2onnx, which Keras' ONNX export imports lazily (``keras.src.utils.module_utils.LazyModule``),
so the module graph never sees it; its op handlers register themselves when their submodules are imported."""

from PyInstaller.utils.hooks import collect_submodules

hiddenimports = collect_submodules("tf2onnx", filter=lambda name: ".tests" not in name)
