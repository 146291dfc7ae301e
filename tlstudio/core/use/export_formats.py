"""The export formats: their names, their files, and how each one is written.

============== ======================== =====================================
format         artifact                 input
============== ======================== =====================================
keras          ``model.keras``          Keras 3 model, input ``image``
savedmodel     ``saved_model/``         signature ``serving_default``:
                                        ``image`` → ``probabilities``
tflite         ``model.tflite``         float32, signature as SavedModel
tflite-fp16    ``model_fp16.tflite``    float32 in and out, float16 weights
tflite-int8    ``model_int8.tflite``    uint8 in and out, full-integer ops
onnx           ``model.onnx``           ``image`` → ``probabilities``
============== ======================== =====================================

Every artifact takes raw RGB pixels 0..255 (uint8 for int8 TFLite, quantised
with its input tensor's scale and zero point) in NHWC layout at the model's
input size: the preprocessing is a layer inside the model.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from tlstudio.core.spec import tensorflow_load
from tlstudio.core.spec.errors import Cancelled, ExportError

FORMATS = ("keras", "savedmodel", "tflite", "tflite-fp16", "tflite-int8", "onnx")
DEFAULT_FORMATS = ("keras", "savedmodel", "tflite", "onnx")
QUANTISED_FORMATS = ("tflite-fp16", "tflite-int8")
"""Formats whose numbers differ from the in-app model by design: judged on agreement and accuracy, not 1e-4."""
TFLITE_FORMATS = ("tflite", "tflite-fp16", "tflite-int8")

ARTIFACT_NAMES = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "tflite-fp16": "model_fp16.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
}

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
SIGNATURE = "serving_default"
ONNX_OPSET = 15


def write_artifacts(
    model,
    staging: Path,
    formats: tuple[str, ...],
    input_size: int,
    calibration: np.ndarray | None,
    step: Callable[[str], None],
) -> dict[str, Path]:
    """Write each artifact into ``staging``; the TFLite models come from the SavedModel.

    ``step(message)`` is called before each artifact (progress and stop requests).
    """
    artifacts: dict[str, Path] = {}
    saved_model: Path | None = None
    for fmt in formats:
        step(f"Writing {ARTIFACT_NAMES[fmt]}")
        path = staging / ARTIFACT_NAMES[fmt]
        if fmt == "keras":
            convert(fmt, lambda: model.save(path))
        elif fmt == "savedmodel":
            convert(fmt, lambda: save_signature(model, path, input_size))
            saved_model = path
        elif fmt in TFLITE_FORMATS:
            if saved_model is None:
                saved_model = work_saved_model(model, staging, input_size)
            content = convert(fmt, lambda: tflite_bytes(saved_model, fmt, calibration))
            path.write_bytes(content)
        else:
            convert(fmt, lambda: save_onnx(model, path, input_size))
        artifacts[fmt] = path
    shutil.rmtree(staging / ".work", ignore_errors=True)
    return artifacts


def work_saved_model(model, staging: Path, input_size: int) -> Path:
    """A SavedModel in ``staging/.work`` (removed after writing) for converters that start from one."""
    path = staging / ".work" / ARTIFACT_NAMES["savedmodel"]
    if not path.exists():
        convert("savedmodel", lambda: save_signature(model, path, input_size))
    return path


def convert(fmt: str, write: Callable):
    """Run one conversion; disk errors propagate as OSError, anything else is an ExportError."""
    import tensorflow as tf

    try:
        with tensorflow_load.quietly():  # the converters' C++ lines are not for the user
            return write()
    except OSError:
        raise
    except tf.errors.OpError as error:
        raise ExportError(f"Cannot write the {fmt} artifact: {error.message}") from error
    except (ExportError, Cancelled):
        raise
    except Exception as error:
        raise ExportError(
            f"Cannot convert the model to {fmt}: {type(error).__name__}: {error}. "
            "Export the other formats, or report this with the model card."
        ) from error


def save_signature(model, path: Path, input_size: int) -> None:
    """A SavedModel whose ``serving_default`` takes ``image`` and returns ``probabilities``."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def tflite_converter(saved_model: Path, fmt: str, calibration: np.ndarray | None):
    """The TFLite converter for ``fmt``, set up but not run (the quantisation debugger reuses it).

    ``tflite-int8`` is full-integer with uint8 input and output, calibrated on
    ``calibration`` (RGB images 0..255, fed as float32 as the float model takes them);
    weights are quantised per output channel (the converter's default, kept).
    ``tflite-fp16`` stores float16 weights and computes in float32 on CPUs.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE])
    if fmt == "tflite-fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite-int8":
        if calibration is None or not len(calibration):
            raise ExportError("The int8 TFLite model needs calibration images; none were given.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter


def tflite_bytes(saved_model: Path, fmt: str, calibration: np.ndarray | None) -> bytes:
    """The converted TFLite model for ``fmt`` (tflite, tflite-fp16 or tflite-int8)."""
    return tflite_converter(saved_model, fmt, calibration).convert()


def save_onnx(model, path: Path, input_size: int) -> None:
    """ONNX with input ``image`` and output ``probabilities``."""
    import onnx
    import tensorflow as tf

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=INPUT_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False, input_signature=[spec], opset_version=ONNX_OPSET)
    proto = onnx.load(str(path))
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
    proto.graph.output[0].name = OUTPUT_NAME
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
