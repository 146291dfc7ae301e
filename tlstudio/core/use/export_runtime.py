"""Run an exported artifact in its own runtime: Keras, TensorFlow, the TFLite interpreter, ONNX Runtime.

Each loader returns a function from a batch of float32 images (raw RGB 0..255,
NHWC) to float32 probabilities. Only the artifact's runtime is imported, so
the cost measurement (:mod:`tlstudio.core.use.export_costs`) can run one in a
fresh process and see that runtime's own memory and speed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from tlstudio.core.spec import tensorflow_load
from tlstudio.core.use.export_formats import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE,
    TFLITE_FORMATS,
)

Runner = Callable[[np.ndarray], np.ndarray]

RUNTIMES = {
    "keras": "Keras",
    "savedmodel": "TensorFlow",
    "tflite": "TFLite interpreter",
    "tflite-fp16": "TFLite interpreter",
    "tflite-int8": "TFLite interpreter",
    "onnx": "ONNX Runtime",
}


def load_runner(fmt: str, path: str | os.PathLike[str]) -> Runner:
    """A function running the artifact ``path`` of format ``fmt`` on a batch of images."""
    if fmt == "keras":
        return _keras_runner(Path(path))
    if fmt == "savedmodel":
        return _saved_model_runner(Path(path))
    if fmt in TFLITE_FORMATS:
        return _tflite_runner(Path(path))
    if fmt == "onnx":
        return _onnx_runner(Path(path))
    raise ValueError(f"no runtime for format {fmt!r}")


def runtime_version(fmt: str) -> str:
    """The runtime that runs ``fmt`` and its version, e.g. "ONNX Runtime 1.22.0"."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {"Keras": ("keras",), "TensorFlow": ("tensorflow",), "ONNX Runtime": ("onnxruntime",),
                "TFLite interpreter": ("ai-edge-litert", "tflite-runtime", "tensorflow")}
    name = RUNTIMES[fmt]
    for package in packages[name]:
        try:
            return f"{name} {version(package)}" + (f" (from {package})" if fmt in TFLITE_FORMATS else "")
        except PackageNotFoundError:
            continue
    return name


def _keras_runner(path: Path) -> Runner:
    import keras

    import tlstudio.core.model.preprocess  # noqa: F401  registers the Preprocess layer for loading

    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return lambda images: np.asarray(model(images, training=False), dtype=np.float32)


def _saved_model_runner(path: Path) -> Runner:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return lambda images: signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()


def _tflite_runner(path: Path) -> Runner:
    """Image by image (the interpreter's input has batch 1), quantising input and output when integer."""
    interpreter = tflite_interpreter(path)
    with tensorflow_load.quietly():  # "Created TensorFlow Lite XNNPACK delegate" is not for the user
        interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    sink = interpreter.get_output_details()[0]

    def run(images: np.ndarray) -> np.ndarray:
        outputs = []
        for image in images:
            interpreter.set_tensor(source["index"], quantise(image[None], source))
            interpreter.invoke()
            outputs.append(dequantise(interpreter.get_tensor(sink["index"]), sink)[0])
        return np.stack(outputs)

    return run


def quantise(batch: np.ndarray, detail: dict) -> np.ndarray:
    """Float pixels to the tensor's dtype: q = round(x / scale + zero_point), clipped (as-is for float)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return batch.astype(dtype)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero_point), limits.min, limits.max).astype(dtype)


def dequantise(values: np.ndarray, detail: dict) -> np.ndarray:
    """Integer outputs to floats: (q - zero_point) * scale."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def tflite_interpreter(path: str | os.PathLike[str]):
    """A TFLite interpreter: LiteRT's when installed, else TensorFlow's (deprecated in TF 2.20+)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
