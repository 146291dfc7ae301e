"""The arithmetic of a training run: its optimizer, class weights and the loss and accuracy it reports."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from tlstudio.core.data.dataset import ImageItem
from tlstudio.core.spec.recipe import TrainSpec

EPSILON = 1e-7
"""Probabilities are clipped to [eps, 1 - eps] before the log, as Keras' crossentropy does."""


def optimizer(spec: TrainSpec, learning_rate: float, total_steps: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer at ``learning_rate``, decayed over ``total_steps`` when cosine decay is on."""
    rate = (
        keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=max(1, total_steps))
        if spec.cosine_decay
        else float(learning_rate)
    )
    if spec.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=spec.momentum)
    return keras.optimizers.Adam(rate)


def class_weights(items: Sequence[ImageItem], classes_count: int) -> dict[int, float]:
    """'Balanced' weights: n / (classes * count), so every class weighs the same in the loss."""
    counts = np.bincount(labels(items), minlength=classes_count)
    present = int(np.count_nonzero(counts))
    return {label: len(items) / (present * count) for label, count in enumerate(counts.tolist()) if count}


def labels(items: Sequence[ImageItem]) -> np.ndarray:
    """The items' labels as int32."""
    return np.asarray([item.label for item in items], dtype=np.int32)


def loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean crossentropy and accuracy of predicted ``probabilities`` against ``labels``."""
    picked = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1 - EPSILON)
    return {
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
    }


def unique(variables: list) -> list:
    """``variables`` without repeats, in order (layers may share a variable)."""
    seen: set[int] = set()
    result = []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result
