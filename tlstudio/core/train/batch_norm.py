"""Batch-norm finalisation: the head's BN statistics from the whole training set.

During training, a BN layer's moving mean and variance are an exponential
average over recent batches, taken while the layers before it were still
changing. Finalisation recomputes them once, over every training image (no
augmentation, every layer in inference mode), layer by layer in order so each
layer sees the inputs the finalised layers before it produce.

The variance is the population (biased, ``ddof=0``) variance, the same
estimator Keras' BatchNormalization uses for its batch statistics and
therefore for the moving variance it applies at inference.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core.spec import anatomy
from tlstudio.core.data.dataset import ImageItem
from tlstudio.core.model import head
from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.spec.text import counted
from tlstudio.core.spec.events import Message, OnEvent
from tlstudio.core.train import extraction

_WEIGHTLESS_HEAD_START = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.Flatten,
)


def finalize_batch_norm(model: "keras.Model", items: Sequence[ImageItem], input_size: int, batch_size: int) -> None:
    """Set each head BatchNormalization layer's moving statistics from every image in ``items``."""
    if not items:
        raise DataError("Batch-norm finalisation needs at least one training image; received none.")
    frozen, trainable = split_head(model)
    features = extraction.extract(frozen, items, input_size, batch_size, label="finalise")
    finalize_from_features(model, trainable, features, batch_size)


def finalize_from_features(model: "keras.Model", chain: list, features: np.ndarray, batch_size: int) -> int:
    """Finalise the head BN layers from precomputed frozen-part features; return how many."""
    norms = head.head_bn_layers(model)
    for norm in norms:
        before = chain[: chain.index(norm)]
        values = _apply_layers(before, features, batch_size)
        axis = norm.axis if isinstance(norm.axis, int) else norm.axis[0]
        mean, variance = moments(values, axis % values.ndim)
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(variance.astype(np.float32))
    return len(norms)


MOMENT_ROWS = 1024
"""Rows per step of :func:`moments`: a float64 copy of 1,024 rows of a 1,280-float feature is 10 MB."""


def moments(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance over every axis but ``axis``, in float64.

    Two passes over ``MOMENT_ROWS`` rows at a time (the mean, then the squared
    deviations from it): as exact as NumPy's ``var`` in float64, without its
    float64 copy of the whole array, which doubled a run's memory per image.
    """
    axes = tuple(a for a in range(values.ndim) if a != axis)
    count = values.size // values.shape[axis] if values.size else 0
    total = np.zeros(values.shape[axis], dtype=np.float64)
    for start in range(0, len(values), MOMENT_ROWS):
        total += values[start:start + MOMENT_ROWS].sum(axis=axes, dtype=np.float64)
    mean = total / max(count, 1)
    shape = [1] * values.ndim
    shape[axis] = values.shape[axis]
    squares = np.zeros_like(mean)
    for start in range(0, len(values), MOMENT_ROWS):
        deviation = values[start:start + MOMENT_ROWS].astype(np.float64)
        deviation -= mean.reshape(shape)
        deviation *= deviation
        squares += deviation.sum(axis=axes)
    return mean, squares / max(count, 1)


def finalize_in_run(
    model: "keras.Model",
    chain: list,
    features: np.ndarray | None,
    extract: Callable[[], np.ndarray],
    batch_size: int,
    report: OnEvent,
) -> bool:
    """Finalise a run's head BN layers from ``features`` (or ``extract()``'s); False when none or stopped."""
    if not head.head_bn_layers(model):
        report(Message("Batch-norm finalisation skipped: the head has no batch-norm layers."))
        return False
    report(Message("Finalising batch norm: the head's mean and variance over the whole training set."))
    try:
        values = features if features is not None else extract()
    except Cancelled:
        report(Message("Batch-norm finalisation stopped on request; keeping the trained statistics."))
        return False
    count = finalize_from_features(model, chain, values, batch_size)
    report(Message(f"Batch norm finalised in {counted(count, 'layer')}."))
    return True


def split_head(model: "keras.Model") -> tuple["keras.Model", list]:
    """The classifier as (frozen part, list of the trainable head layers in order).

    The frozen part runs from the image input through the base to the cut
    tensor and through the head's leading pooling or flattening layer, which
    has no weights; its output is what the feature path extracts once.
    """
    head_layers = anatomy.head_layers(model)
    if not head_layers:
        raise ValueError("The model has no head layers (named 'head_...'); build it with build_classifier.")
    leading = 0
    while leading < len(head_layers) - 1 and isinstance(head_layers[leading], _WEIGHTLESS_HEAD_START):
        leading += 1
    # Node 0 of a head layer is its call inside the classifier itself.
    boundary = head_layers[leading - 1].output if leading else head_layers[0].input
    frozen = keras.Model(model.inputs, boundary, name="frozen_part")
    return frozen, head_layers[leading:]


def _apply_layers(layers: Sequence, values: np.ndarray, batch_size: int) -> np.ndarray:
    """Run ``values`` through ``layers`` in inference mode, in chunks."""
    if not layers:
        return values
    chunk = max(batch_size, 256)
    outputs = []
    for start in range(0, len(values), chunk):
        x = tf.convert_to_tensor(values[start : start + chunk])
        for layer in layers:
            x = layer(x, training=False)
        outputs.append(keras.ops.convert_to_numpy(x))
    return np.concatenate(outputs, axis=0)
