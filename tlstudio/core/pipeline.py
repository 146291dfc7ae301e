"""The input pipeline: image files to batches of pixels, decoded in parallel.

Files are decoded by :func:`tlstudio.core.images.load_rgb` (the one place that
knows about formats, EXIF orientation and colour modes) inside a tf.data
pipeline: decoding runs on several threads at once (Pillow releases the GIL
while it decodes and resizes), batches are formed in the pipeline and the next
batch is prefetched while the model works on the current one.

An image that cannot be decoded (a file truncated after its header was
scanned, say) stops the pipeline with an :class:`ImageError` naming the file
and the reason, rather than being skipped: skipping would silently change the
data a run trains on, and the dataset scan already reports the files it can
tell are bad. Use :func:`image_errors_surfaced` around code that consumes the
pipeline to get that error instead of TensorFlow's wrapped one.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core import images
from tlstudio.core.errors import ImageError

_MARK = "tlstudio-image-error"
_MARKED = re.compile(rf"<{_MARK}>(.*?)</{_MARK}>", re.DOTALL)

ROTATION_FACTOR = 0.05
"""Random rotation of up to +-5% of a full turn (18 degrees)."""
ZOOM_FACTOR = 0.1
CONTRAST_FACTOR = 0.1


def _decoder(paths: Sequence[str], input_size: int):
    """A function from an index (numpy int) to that file's pixels, for tf.numpy_function.

    Passing indices rather than path strings keeps any file name usable, even
    one that is not valid UTF-8.
    """

    def decode(index: np.ndarray) -> np.ndarray:
        path = paths[int(index)]
        try:
            return images.load_rgb(path, input_size)
        except ImageError as error:
            reason = error.reason
        except (OSError, ValueError, MemoryError) as error:
            reason = f"cannot decode: {error}"
        payload = json.dumps([str(path), reason])
        raise ValueError(f"<{_MARK}>{payload}</{_MARK}>")

    return decode


def image_error_from(error: BaseException) -> ImageError | None:
    """The :class:`ImageError` carried by a TensorFlow error from this pipeline, if any."""
    found = _MARKED.search(str(error))
    if not found:
        return None
    path, reason = json.loads(found.group(1))
    return ImageError(path, reason)


@contextmanager
def image_errors_surfaced() -> Iterator[None]:
    """Turn a pipeline decoding failure into the :class:`ImageError` it carries.

    Other TensorFlow errors pass through unchanged.
    """
    try:
        yield
    except (tf.errors.OpError, ValueError) as error:
        image_error = image_error_from(error)
        if image_error is None:
            raise
        raise image_error from None


def augmentation_layers(seed: int = 0) -> keras.Sequential:
    """The training-time augmentation: horizontal flip, small rotation, zoom and contrast.

    It works on raw pixels 0..255 and is applied in the input pipeline, so it
    never becomes part of the saved or exported model.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(ROTATION_FACTOR, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(ZOOM_FACTOR, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomContrast(CONTRAST_FACTOR, value_range=(0, 255), seed=seed + 3),
        ],
        name="augmentation",
    )


def image_batches(
    items: Sequence,
    classes_count: int,
    input_size: int,
    batch_size: int,
    shuffle: bool,
    augment: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` from dataset items (anything with ``path`` and ``label``).

    Images are float32 RGB 0..255 of shape ``(n, input_size, input_size, 3)``,
    each whole image resized to the square; labels are int32 in
    ``0..classes_count-1``. With ``shuffle`` the order changes every epoch
    (seeded); without it the order is the items' order, every time.
    ``augment`` adds random flips, rotations, zooms and contrast changes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size!r}")
    paths = [str(item.path) for item in items]
    labels = np.asarray([int(item.label) for item in items], dtype=np.int32)
    if labels.size and (labels.min() < 0 or labels.max() >= classes_count):
        raise ValueError(
            f"Labels must lie in 0..{classes_count - 1}. Received labels from {labels.min()} to {labels.max()}."
        )
    decode = _decoder(paths, input_size)
    shape = (input_size, input_size, 3)

    def load(index, label):
        pixels = tf.numpy_function(decode, [index], tf.uint8, stateful=False)
        pixels = tf.ensure_shape(pixels, shape)
        return tf.cast(pixels, tf.float32), label

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), labels))
    if shuffle and paths:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size)
    if augment:
        layers = augmentation_layers(seed)
        dataset = dataset.map(
            lambda x, y: (tf.clip_by_value(layers(x, training=True), 0.0, 255.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_images(paths: Sequence[str], input_size: int, batch_size: int = 32) -> np.ndarray:
    """Decode files in parallel into one float32 array ``(n, input_size, input_size, 3)``, 0..255.

    Raises :class:`ImageError` naming the first file that cannot be decoded.
    """
    if not paths:
        return np.zeros((0, input_size, input_size, 3), dtype=np.float32)
    items = [_PathItem(str(path)) for path in paths]
    dataset = image_batches(items, 1, input_size, batch_size, shuffle=False)
    with image_errors_surfaced():
        return np.concatenate([x.numpy() for x, _ in dataset], axis=0)


class _PathItem:
    """A path without a label, for :func:`load_images`."""

    __slots__ = ("path", "label")

    def __init__(self, path: str) -> None:
        self.path = path
        self.label = 0
