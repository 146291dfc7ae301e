"""Grad-CAM: which parts of an image made the model choose a class.

Grad-CAM (Selvaraju et al., 2017) takes a convolutional tensor ``A`` of shape
(height, width, channels) and the score ``y`` of a class (its logit), weighs
each channel by the average gradient ``dy/dA`` over the positions, sums the
weighted channels and keeps the positive part: the positions whose features
raise the class score. The map is scaled to 0..1 and resized to the model's
input size.

The tensor is the cut tensor by default (where the head looks), or any
tensor of the base with a spatial map, named as in the base's catalogue
(``block4_conv3:0``). Early tensors give sharp but local maps; late ones
coarse maps of whole objects. :func:`overlay` colours the map (a built-in
jet or viridis table, no plotting library) and blends it over the image.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlstudio.core.model import taps
from tlstudio.core.spec.errors import UserError

# Jet as MATLAB defines it: dark blue, blue, cyan, yellow, red, dark red at equal steps.
_JET = np.array(
    [[0, 0, 0.5], [0, 0, 1], [0, 0.5, 1], [0, 1, 1], [0.5, 1, 0.5], [1, 1, 0], [1, 0.5, 0], [1, 0, 0], [0.5, 0, 0]]
)
# Viridis sampled at 11 equal steps (matplotlib's values), interpolated linearly in between.
_VIRIDIS = np.array(
    [
        [0.267, 0.005, 0.329], [0.283, 0.141, 0.458], [0.254, 0.265, 0.530], [0.207, 0.372, 0.553],
        [0.164, 0.471, 0.558], [0.128, 0.567, 0.551], [0.135, 0.659, 0.518], [0.267, 0.749, 0.441],
        [0.478, 0.821, 0.318], [0.741, 0.873, 0.150], [0.993, 0.906, 0.144],
    ]
)
COLORMAPS = {"jet": _JET, "viridis": _VIRIDIS, "gray": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])}

_TAPS: "weakref.WeakKeyDictionary[Any, dict[str, taps.Tap]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class GradCam:
    """A Grad-CAM result: ``heatmap`` (height, width) float32 in 0..1 at the model's input size,
    the class it explains, the tensor it was taken at and the model's class probabilities."""

    heatmap: np.ndarray
    class_index: int
    tensor: str
    probabilities: np.ndarray


def grad_cam(
    model: Any, image_rgb: np.ndarray, tensor_name: str | None = None, class_index: int | None = None
) -> GradCam:
    """The Grad-CAM map of ``image_rgb`` (H, W, 3, 0..255; resized to the input) for one class.

    ``class_index`` defaults to the predicted class. ``tensor_name`` defaults
    to the cut tensor, or the nearest spatial tensor before it when the cut
    tensor has no spatial map. A named tensor without a spatial map (after
    pooling, flatten or a dense layer) raises TensorNameError offering the
    nearest tensor that has one.
    """
    import tensorflow as tf

    tap = _tap(model, tensor_name)
    batch = tf.constant(taps.image_batch(image_rgb, taps.input_size(model)))
    with tf.GradientTape() as tape:
        activations, tail = tap.model(batch, training=False)
        scores = tap.scores(tail)
        chosen = int(tf.argmax(scores[0])) if class_index is None else _check_class(class_index, scores.shape[-1])
        target = scores[:, chosen]
    gradients = tape.gradient(target, activations)
    probabilities = tf.nn.softmax(scores[0]) if tap.logits else scores[0]
    weights = tf.reduce_mean(gradients[0], axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(activations[0] * weights, axis=-1)).numpy()
    return GradCam(
        heatmap=_resize(_unit(cam), taps.input_size(model)),
        class_index=chosen,
        tensor=tap.tensor.name,
        probabilities=np.asarray(probabilities, dtype=np.float64),
    )


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """The image with the coloured heat map blended over it, uint8 (H, W, 3) at the image's size.

    ``alpha`` is the weight of the heat map (0: image only, 1: map only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"The overlay opacity must be between 0 and 1. Received: alpha={alpha!r}")
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an RGB image of shape (height, width, 3). Received: shape {image.shape}")
    heat = _resize(np.asarray(heatmap, dtype=np.float32), image.shape[:2])
    coloured = colorize(heat, colormap).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * coloured
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Values in 0..1 (any shape) as uint8 RGB colours from a built-in table (shape + (3,))."""
    if colormap not in COLORMAPS:
        raise UserError(f"Unknown colour map. Expected one of {', '.join(COLORMAPS)}. Received: {colormap!r}")
    table = COLORMAPS[colormap]
    positions = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(table) - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, len(table) - 1)
    fraction = (positions - low)[..., None]
    colours = table[low] * (1.0 - fraction) + table[high] * fraction
    return np.rint(colours * 255).astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 image (H, W, 3 or H, W) as a PNG; UserError when the file cannot be written."""
    from PIL import Image

    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(target, format="PNG")
    except OSError as error:
        raise UserError(
            f"Cannot write the image {str(target)!r}: {error.strerror or error}. Choose a folder you can write to."
        ) from None
    return target


def _tap(model: Any, tensor_name: str | None) -> taps.Tap:
    """The gradient model for ``tensor_name``, built once per model and tensor."""
    info = (
        taps.default_tensor(model) if tensor_name is None else taps.find_tensor(model, tensor_name, True, "Grad-CAM", allow_input=False)
    )
    built = _TAPS.setdefault(model, {})
    if info.name not in built:
        built[info.name] = taps.tap_model(model, info, with_scores=True)
    return built[info.name]


def _check_class(class_index: int, classes: int) -> int:
    if not 0 <= int(class_index) < classes:
        raise UserError(
            f"The model has {classes} classes, numbered 0 to {classes - 1}. Received: class_index={class_index!r}"
        )
    return int(class_index)


def _unit(values: np.ndarray) -> np.ndarray:
    """Scaled to 0..1 by the maximum; all zeros stays all zeros (nothing supports the class)."""
    top = float(np.max(values)) if values.size else 0.0
    return (values / top).astype(np.float32) if top > 0 else np.zeros_like(values, dtype=np.float32)


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float map resized to (height, width), bilinear, kept in its range."""
    from PIL import Image

    height, width = size
    if values.shape == (height, width):
        return values.astype(np.float32)
    resized = np.asarray(Image.fromarray(values.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(resized, float(values.min()), float(values.max())).astype(np.float32)
