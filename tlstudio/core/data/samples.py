"""Small generated image folders and a tiny VGG-shaped model.

They let the self-test, the screenshots, the benchmarks and the test suite run
the whole workflow in seconds, offline: a model with VGG's layer names at a
32x32 input, and class folders whose images differ by colour and pattern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

SAMPLE_CLASSES = ("circles", "squares", "stripes")
_COLOURS = ((220, 60, 50), (40, 120, 220), (60, 180, 90), (230, 180, 40), (150, 70, 200))


def sample_image(class_index: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One RGB uint8 image whose colour and shape (circle, square, stripes, triangle) depend on ``class_index``."""
    background = rng.integers(0, 60, size=3)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = background
    colour = np.array(_COLOURS[class_index % len(_COLOURS)], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, size=2)
    radius = rng.integers(size // 6, size // 3)
    kind = class_index % 4
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif kind == 1:
        mask = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    elif kind == 2:
        mask = ((xx + rng.integers(0, 8)) // max(2, size // 8)) % 2 == 0
    else:
        top = cy - radius
        mask = (yy >= top) & (yy <= cy + radius) & (np.abs(xx - cx) <= (yy - top) / 2)
    image[mask] = colour
    image += rng.normal(0, 12, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_sample_folders(
    root: str | Path,
    classes: Sequence[str] = SAMPLE_CLASSES,
    per_class: int = 12,
    size: int = 48,
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<n>.png`` images and return ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            Image.fromarray(sample_image(index, rng, size)).save(folder / f"{name}_{n:03d}.png")
    return root


def make_tiny_vgg(input_size: int = 32, include_top: bool = False, num_classes: int = 10, seed: int = 0):
    """A VGG-shaped Keras model with VGG's layer names and very few filters.

    Three blocks (2, 2 and 3 convolutions of 3x3, each block ending in a 2x2
    max-pool), optionally followed by ``flatten``, ``fc1``, ``fc2`` and
    ``predictions`` as in ``keras.applications.VGG16``.
    """
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, 3), name="input_layer")
    x = inputs
    for block, (convs, filters) in enumerate(((2, 4), (2, 8), (3, 8)), start=1):
        for conv in range(1, convs + 1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}"
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(16, activation="relu", name="fc1")(x)
        x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
        x = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="tiny_vgg")
