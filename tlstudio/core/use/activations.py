"""Feature maps: what one tensor of the base sees in an image, channel by channel.

Looking at the maps of a few tensors for the same image shows what "cutting
there" keeps: early tensors hold edges and colours at full resolution, late
ones fewer, coarser maps that respond to parts of objects. :func:`activations`
returns the maps of a named tensor (names as in the base's catalogue) and
:func:`channel_grid` lays them out as one image, each channel scaled to its
own range.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from tlstudio.core.model import taps

DEFAULT_MAX_CHANNELS = 64
MIN_CELL = 48
"""Small maps are enlarged (nearest neighbour, whole multiples) to at least this many pixels a side."""

_TAPS: "weakref.WeakKeyDictionary[Any, dict[str, taps.Tap]]" = weakref.WeakKeyDictionary()


def activations(model: Any, image_rgb: np.ndarray, tensor_name: str) -> np.ndarray:
    """The feature maps of ``tensor_name`` for ``image_rgb`` (H, W, 3, 0..255), float32 (h, w, channels).

    ``model`` is a classifier (the tensor is looked up in its nested base,
    after the classifier's preprocessing) or any functional Keras model. A
    tensor without a spatial map raises TensorNameError offering the nearest
    one that has one.
    """
    info = taps.find_tensor(model, tensor_name, spatial=True, purpose="The activations viewer")
    built = _TAPS.setdefault(model, {})
    if info.name not in built:
        built[info.name] = taps.tap_model(model, info, with_scores=False)
    batch = taps.image_batch(image_rgb, taps.input_size(model))
    maps = built[info.name].model(batch, training=False)
    return np.asarray(maps, dtype=np.float32)[0]


def strongest_channels(maps: np.ndarray, count: int) -> np.ndarray:
    """The indexes of the ``count`` channels with the highest mean activation, in channel order."""
    values = np.asarray(maps, dtype=np.float64)
    means = values.reshape(-1, values.shape[-1]).mean(axis=0)
    chosen = np.argsort(-means, kind="stable")[: max(0, count)]
    return np.sort(chosen)


def channel_grid(
    maps: np.ndarray, max_channels: int = DEFAULT_MAX_CHANNELS, gap: int = 1, cell: int | None = None
) -> np.ndarray:
    """The channels of ``maps`` (h, w, c) as one greyscale uint8 image, a grid of tiles.

    With more than ``max_channels`` channels the most active ones are shown
    (see :func:`strongest_channels`), in channel order, row by row. Each tile
    is scaled from its own minimum (black) to its maximum (white); a constant
    channel is black. Tiles are enlarged by a whole factor to at least
    ``cell`` pixels a side (default :data:`MIN_CELL`) and separated by
    ``gap`` pixels of mid grey.
    """
    values = np.asarray(maps, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"Expected feature maps of shape (height, width, channels). Received: shape {values.shape}")
    if max_channels < 1:
        raise ValueError(f"max_channels must be at least 1. Received: max_channels={max_channels!r}")
    height, width, channels = values.shape
    chosen = strongest_channels(values, max_channels) if channels > max_channels else np.arange(channels)
    scale = max(1, math.ceil((cell or MIN_CELL) / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    columns = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    grid = np.full((rows * tile_h + (rows - 1) * gap, columns * tile_w + (columns - 1) * gap), 128, dtype=np.uint8)
    for position, channel in enumerate(chosen):
        row, column = divmod(position, columns)
        tile = _to_bytes(values[:, :, channel])
        tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
        top, left = row * (tile_h + gap), column * (tile_w + gap)
        grid[top : top + tile_h, left : left + tile_w] = tile
    return grid


def _to_bytes(channel: np.ndarray) -> np.ndarray:
    low, high = float(channel.min()), float(channel.max())
    if high <= low:
        return np.zeros(channel.shape, dtype=np.uint8)
    return np.rint((channel - low) / (high - low) * 255).astype(np.uint8)
