"""The images an export is calibrated and judged on, decoded exactly as the float model sees them.

Calibration (the int8 model's value ranges) draws from the run's **training**
images, stratified: classes take turns, each in a fixed shuffled order, so
every class is represented and none dominates, up to
:data:`CALIBRATION_IMAGES` (all of a smaller set). The judging set is the
run's **validation** images up to :data:`CHECK_IMAGE_CAP`, with their labels,
so calibration and judgement never share an image.

Both are decoded by :func:`tlstudio.core.data.images.load_rgb` at the model's
input size, RGB 0..255: the same decoding training and ``predict`` use; the
model's own Preprocess layer does the rest. They are kept as uint8 (1,000
images at 224 px take 150 MB, not 600 MB as float32) and become float32 a
batch at a time, as the model takes them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tlstudio.core.spec.errors import ImageError

CALIBRATION_IMAGES = 300
"""Calibration images at most. benchmarks/calibration_size.py measures where more stops helping:
on an EfficientNet-Lite0 run the int8 error stopped falling at about 100 images (see the README)."""
CHECK_IMAGE_CAP = 1000
"""Validation images every artifact is judged on, at most."""
MIN_CHECK_IMAGES = 32
"""A smaller validation split is topped up with training images (for agreement only, they have no fair accuracy)."""
SEED = 0


@dataclass(frozen=True)
class ImageSet:
    """Decoded images (N, size, size, 3) uint8 RGB, their labels (-1: none) and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    note: str
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def labelled(self) -> int:
        """How many images carry a label usable for accuracy."""
        return int(np.sum(self.labels >= 0))


def stratified(items: Sequence, limit: int, seed: int = SEED) -> list:
    """Up to ``limit`` items, classes taking turns (each class in a seeded shuffled order)."""
    by_class: dict[int, list] = defaultdict(list)
    for item in items:
        by_class[item.label].append(item)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda item: item.path)
        rng.shuffle(members)
        queues.append(members)
    chosen: list = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def calibration_set(dataset, classes: Sequence[str], input_size: int, limit: int = CALIBRATION_IMAGES) -> ImageSet:
    """Stratified training images for int8 calibration; empty when none can be read."""
    ranked = stratified(dataset.train, len(dataset.train))
    images, labels = load_items(ranked, input_size, limit)
    labels = _relabel(labels, dataset, classes)
    per_class = dict.fromkeys(classes, 0)
    for label in labels:
        if label >= 0:
            per_class[classes[label]] += 1
    note = f"{len(images)} training images, stratified over {sum(1 for n in per_class.values() if n)} classes"
    return ImageSet(_stack(images, input_size), np.asarray(labels, dtype=np.int64), note, per_class)


def check_set(dataset, classes: Sequence[str], input_size: int, cap: int = CHECK_IMAGE_CAP) -> ImageSet:
    """Validation images with labels up to ``cap``, topped up with unlabelled training images to
    :data:`MIN_CHECK_IMAGES`; empty when none can be read."""
    val_images, val_labels = load_items(stratified(dataset.val, len(dataset.val)), input_size, cap)
    extra = max(0, min(MIN_CHECK_IMAGES, cap) - len(val_images))
    train_images, _ = load_items(stratified(dataset.train, len(dataset.train)), input_size, extra)
    labels = _relabel(val_labels, dataset, classes) + [-1] * len(train_images)
    note = f"{len(val_images)} validation images" + (
        f" and {len(train_images)} training images" if train_images else ""
    )
    if len(dataset.val) > cap:
        note += f" (capped at {cap} of {len(dataset.val)})"
    return ImageSet(_stack(val_images + train_images, input_size), np.asarray(labels, dtype=np.int64), note)


def generated_set(input_size: int, count: int = 8) -> ImageSet:
    """Random images, for checking artifacts when the run's images are gone (no labels)."""
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (count, input_size, input_size, 3), dtype=np.uint8)
    return ImageSet(images, np.full(count, -1, dtype=np.int64), f"{count} generated random images")


def load_items(items: Sequence, input_size: int, limit: int) -> tuple[list[np.ndarray], list[int]]:
    """Up to ``limit`` decoded uint8 images and their labels; unreadable ones are passed over."""
    from tlstudio.core.data.images import load_rgb

    images: list[np.ndarray] = []
    labels: list[int] = []
    for item in items:
        if len(images) >= limit:
            break
        try:
            images.append(load_rgb(item.path, input_size))
        except (ImageError, OSError):
            continue
        labels.append(int(item.label))
    return images, labels


def _label_names(dataset, classes: Sequence[str]) -> dict[int, int]:
    """Dataset label → run output index, by class name (a class the run does not know maps to -1)."""
    return {index: (list(classes).index(name) if name in classes else -1) for index, name in enumerate(dataset.classes)}


def _relabel(labels: list[int], dataset, classes: Sequence[str]) -> list[int]:
    mapping = _label_names(dataset, classes)
    return [mapping.get(label, -1) for label in labels]


def _stack(images: list[np.ndarray], input_size: int) -> np.ndarray:
    if not images:
        return np.zeros((0, input_size, input_size, 3), dtype=np.uint8)
    return np.stack(images)
