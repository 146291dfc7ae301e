"""The input preprocessing a base model was trained with, as a Keras layer.

Keeping it inside the model means every exported artifact (SavedModel, TFLite,
ONNX) takes raw RGB pixels 0..255 and nobody has to repeat the scaling by hand.
"""

from __future__ import annotations

import keras
from keras import ops

from tlstudio.core.spec.errors import RecipeError

MODES = ("caffe", "lite", "none")

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
"""The per-channel ImageNet mean, in BGR order, that the original VGG weights subtract."""

LITE_MEAN = 127.0
LITE_SCALE = 128.0


@keras.saving.register_keras_serializable(package="tlstudio")
class Preprocess(keras.layers.Layer):
    """Turn raw RGB float pixels (0..255) into what a base model expects.

    ``mode``: ``"caffe"`` (VGG: RGB to BGR, minus the ImageNet mean, as
    ``keras.applications.vgg16.preprocess_input``), ``"lite"`` (EfficientNet-Lite:
    ``(x - 127) / 128``) or ``"none"`` (pass through, for the user's own models).

    The layer computes in float32 even under a mixed-precision policy: the mean
    subtraction loses visible precision in float16, and the next layer casts
    its input to its own compute dtype anyway.
    """

    def __init__(self, mode: str = "caffe", **kwargs) -> None:
        if mode not in MODES:
            raise RecipeError(
                f"Unknown preprocessing mode. Expected one of {', '.join(MODES)}. Received: mode={mode!r}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            # Slices and a concatenation rather than a reverse op: every exporter
            # (TFLite float and int8, ONNX) maps them to basic operators.
            bgr = ops.concatenate([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)
            mean = ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)
            return bgr - mean
        if self.mode == "lite":
            return (x - LITE_MEAN) / LITE_SCALE
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["mode"] = self.mode
        return config
