"""Photo-like generated landscapes, one kind per class, for screenshots and demos.

Each image is a sky gradient over a horizon with soft texture, lit as the
class says: ``beach`` (blue sky, sea, sand), ``forest`` (green canopy and
trunks), ``snow`` (pale sky, white slopes) and ``sunset`` (orange sky, dark
hills, a low sun). Light, horizon, noise and blur vary per image, so they
look like photos at thumbnail size and a network can still tell them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

SCENE_CLASSES = ("beach", "forest", "snow", "sunset")

# (sky top, sky bottom, ground top, ground bottom) per class, RGB
_PALETTES = {
    "beach": ((70, 130, 210), (170, 210, 240), (40, 110, 170), (225, 205, 160)),
    "forest": ((120, 170, 210), (200, 220, 220), (40, 90, 40), (25, 55, 25)),
    "snow": ((170, 190, 215), (230, 235, 245), (235, 240, 248), (195, 205, 220)),
    "sunset": ((60, 40, 90), (245, 140, 60), (70, 40, 50), (25, 15, 25)),
}


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, dtype=np.float32)


def scene_image(kind: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """One RGB uint8 landscape of ``kind`` (one of :data:`SCENE_CLASSES`)."""
    # Light borrowed from another kind of scene (a grey beach day, a golden forest) makes some images
    # ambiguous, as real photos are.
    other = _PALETTES[SCENE_CLASSES[rng.integers(len(SCENE_CLASSES))]]
    mix = rng.uniform(0.3, 0.85) if rng.random() < 0.35 else 0.0
    sky_top, sky_bottom, ground_top, ground_bottom = (
        np.array(own, np.float32) * (1 - mix) + np.array(borrowed, np.float32) * mix
        for own, borrowed in zip(_PALETTES[kind], other)
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tilt = rng.uniform(-0.12, 0.12)
    horizon = rng.uniform(0.4, 0.62) + tilt * (xx - 0.5)
    if kind in ("forest", "sunset", "snow"):
        horizon = horizon - 0.08 * np.sin(xx * rng.uniform(4, 9) + rng.uniform(0, 6)) ** 2
    sky_t = np.clip(yy / np.maximum(horizon, 1e-3), 0, 1)[..., None]
    ground_t = np.clip((yy - horizon) / np.maximum(1 - horizon, 1e-3), 0, 1)[..., None]
    sky = sky_top * (1 - sky_t) + sky_bottom * sky_t
    ground = ground_top * (1 - ground_t) + ground_bottom * ground_t
    image = np.where((yy < horizon)[..., None], sky, ground)
    if kind == "forest":
        for _ in range(rng.integers(5, 10)):
            x = rng.uniform(0, 1)
            width = rng.uniform(0.01, 0.03)
            trunk = (np.abs(xx - x) < width) & (yy > horizon - 0.05)
            image[trunk] = image[trunk] * 0.45 + np.array([70, 50, 30]) * 0.55
    elif kind == "sunset":
        sx, sy = rng.uniform(0.25, 0.75), float(np.mean(horizon)) - rng.uniform(0.03, 0.1)
        glow = np.exp(-(((xx - sx) ** 2 + (yy - sy) ** 2) / rng.uniform(0.004, 0.012)))[..., None]
        image = image + glow * np.array([255, 200, 120]) * (yy < horizon)[..., None]
    elif kind == "beach":
        foam = np.abs(yy - (horizon + rng.uniform(0.12, 0.2))) < 0.012
        image[foam] = np.array([240, 245, 250])
    elif kind == "snow":
        for _ in range(rng.integers(2, 5)):
            x, y = rng.uniform(0, 1), rng.uniform(0.55, 0.95)
            tree = (np.abs(xx - x) < (yy - (y - 0.15)) * 0.35) & (yy > y - 0.15) & (yy < y)
            image[tree] = np.array([35, 60, 45])
    texture = _blur(rng.normal(0, 40, size=(size, size, 3)) + 128, rng.uniform(0.8, 2.0)) - 128
    image = image + texture * (yy > horizon)[..., None] * 0.8 + rng.normal(0, 4, size=image.shape)
    image = image * rng.uniform(0.8, 1.15) + rng.uniform(-12, 12, size=3)
    return np.clip(_blur(image, rng.uniform(0.3, 0.9)), 0, 255).astype(np.uint8)


def make_scene_folders(root: str | Path, classes: Sequence[str] = SCENE_CLASSES, per_class: int = 30,
                       size: int = 128, seed: int = 0) -> Path:
    """Write ``root/<class>/<class>_<n>.jpg`` landscapes and return ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            Image.fromarray(scene_image(name, rng, size)).save(folder / f"{name}_{n:03d}.jpg", quality=90)
    return root
