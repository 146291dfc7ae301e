"""The input pipeline: image files to batches of pixels, decoded in parallel.

Files are decoded by :func:`tlstudio.core.data.images.load_rgb` (the one place that
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

Pipelines iterated for several epochs (training, fine-tuning, validation) can
keep decoded images in memory (``cache_decoded=True``), so later epochs skip
decoding and resizing. All such caches in the process share one budget
(``TLSTUDIO_DECODED_CACHE_MB``, default a quarter of the machine's memory, at
most :data:`DEFAULT_DECODED_CACHE_MAX_MB`): a pipeline keeps as many of its
images as the budget has room for and decodes the rest every epoch, so
20,000 images never occupy more than the budget.

A head trained on extracted features reads them through
:func:`feature_batches`, which reads batches of rows from the feature array
(by shuffled row index), so the features are held once.
"""

from __future__ import annotations

import json
import os
import re
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core.data import images
from tlstudio.core.spec import settings
from tlstudio.core.spec.errors import ImageError

_MARK = "tlstudio-image-error"
_MARKED = re.compile(rf"<{_MARK}>(.*?)</{_MARK}>", re.DOTALL)

ROTATION_FACTOR = 0.05
"""Random rotation of up to +-5% of a full turn (18 degrees)."""
ZOOM_FACTOR = 0.1
CONTRAST_FACTOR = 0.1
DECODED_CACHE_ENV = "TLSTUDIO_DECODED_CACHE_MB"
DEFAULT_DECODED_CACHE_MAX_MB = 4096


def decoded_cache_budget() -> int:
    """Bytes all decoded-image caches may hold together.

    ``TLSTUDIO_DECODED_CACHE_MB`` when set (0 turns the caches off), else a
    quarter of the physical memory, at most :data:`DEFAULT_DECODED_CACHE_MAX_MB`.
    """
    return settings.megabytes_from_env(
        DECODED_CACHE_ENV, _default_decoded_cache_budget(), "turns the decoded-image cache off"
    )


def _default_decoded_cache_budget() -> int:
    """A quarter of the physical memory (4 GiB assumed when unknown), at most :data:`DEFAULT_DECODED_CACHE_MAX_MB`."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 4 * 2**30
    return min(physical // 4, DEFAULT_DECODED_CACHE_MAX_MB * 2**20)


class DecodedCache:
    """Decoded images of one pipeline, by index, for as many images as the shared budget allows.

    Room is reserved from the process-wide budget when the cache is made and
    given back when it is garbage-collected with the dataset that holds it
    (the decoder itself holds only a weak reference: TensorFlow keeps traced
    functions alive longer than their datasets). Images with an
    index below ``capacity`` are kept once decoded; the others are decoded
    every time.
    """

    _lock = threading.Lock()
    _reserved = 0

    def __init__(self, count: int, shape: tuple[int, ...]) -> None:
        per_image = int(np.prod(shape))
        with DecodedCache._lock:
            free = max(0, decoded_cache_budget() - DecodedCache._reserved)
            self.capacity = min(count, free // per_image) if per_image else 0
            reserved = self.capacity * per_image
            DecodedCache._reserved += reserved
        weakref.finalize(self, DecodedCache._release, reserved)
        self.nbytes = reserved
        self._pixels = np.empty((self.capacity, *shape), dtype=np.uint8)
        self._filled = np.zeros(self.capacity, dtype=bool)

    @staticmethod
    def _release(amount: int) -> None:
        with DecodedCache._lock:
            DecodedCache._reserved -= amount

    @classmethod
    def reserved_bytes(cls) -> int:
        """Bytes reserved by all live caches together."""
        return cls._reserved

    def get(self, index: int) -> np.ndarray | None:
        if index < self.capacity and self._filled[index]:
            return self._pixels[index].copy()
        return None

    def put(self, index: int, pixels: np.ndarray) -> None:
        if index < self.capacity:
            self._pixels[index] = pixels
            self._filled[index] = True


def _decoder(paths: Sequence[str], input_size: int, cache: DecodedCache | None = None):
    """A function from an index (numpy int) to that file's pixels, for tf.numpy_function.

    Passing indices rather than path strings keeps any file name usable, even
    one that is not valid UTF-8.
    """

    cache_ref = weakref.ref(cache) if cache is not None else None

    def decode(index: np.ndarray) -> np.ndarray:
        position = int(index)
        kept_by = cache_ref() if cache_ref is not None else None
        if kept_by is not None:
            kept = kept_by.get(position)
            if kept is not None:
                return kept
        path = paths[position]
        try:
            pixels = images.load_rgb(path, input_size)
            if kept_by is not None:
                kept_by.put(position, pixels)
            return pixels
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
    cache_decoded: bool = False,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` from dataset items (anything with ``path`` and ``label``).

    Images are float32 RGB 0..255 of shape ``(n, input_size, input_size, 3)``,
    each whole image resized to the square; labels are int32 in
    ``0..classes_count-1``. With ``shuffle`` the order changes every epoch
    (seeded); without it the order is the items' order, every time.
    ``augment`` adds random flips, rotations, zooms and contrast changes.
    ``cache_decoded`` keeps decoded images in memory for the next passes, as
    far as the shared budget allows (see :func:`decoded_cache_budget`); use it
    for data read every epoch, not for a single pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size!r}")
    paths = [str(item.path) for item in items]
    labels = np.asarray([int(item.label) for item in items], dtype=np.int32)
    if labels.size and (labels.min() < 0 or labels.max() >= classes_count):
        raise ValueError(
            f"Labels must lie in 0..{classes_count - 1}. Received labels from {labels.min()} to {labels.max()}."
        )
    shape = (input_size, input_size, 3)
    cache = DecodedCache(len(paths), shape) if cache_decoded and paths else None
    decode = _decoder(paths, input_size, cache)

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
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    # The dataset owns the decoded images: they live exactly as long as it does.
    dataset._tlstudio_decoded_cache = cache
    return dataset


def feature_batches(
    features: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> "FeatureBatches":
    """Batches of ``(features[i], labels[i])``, in a new shuffled order each epoch with ``shuffle_seed``."""
    return FeatureBatches(features, labels, batch_size, shuffle_seed)


class FeatureBatches:
    """Batches of rows of a feature array and its labels, read from the arrays as each batch is needed.

    With ``shuffle_seed`` every iteration (epoch) draws a new order: the order
    tf.data's seeded shuffle of the rows would give (a shuffle of the row
    indices with the same seed), without tf.data holding its own copies of
    every feature, so memory grows by one feature array with the data.
    Iterated directly it feeds a one-device training loop from memory, without
    tf.data's per-epoch iterators, prefetch thread and per-batch gather in that
    thread (a fifth of a short head run); :meth:`dataset` gives the same
    batches as a tf.data pipeline, for strategies that split batches between
    devices or workers.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle_seed: int | None = None) -> None:
        self.features, self.labels, self.batch_size = features, labels, batch_size
        indices = tf.data.Dataset.range(len(features))
        if shuffle_seed is not None and len(features):
            indices = indices.shuffle(len(features), seed=shuffle_seed, reshuffle_each_iteration=True)
        self._indices = indices
        self._orders = indices.batch(max(len(features), 1)) if shuffle_seed is not None else None
        self.element_spec = (
            tf.TensorSpec((None, *features.shape[1:]), tf.as_dtype(features.dtype)),
            tf.TensorSpec((None, *labels.shape[1:]), tf.as_dtype(labels.dtype)),
        )

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        """This epoch's batches; a shuffled order is drawn now, when the iteration starts."""
        order = None
        if self._orders is not None and len(self.features):
            order = next(iter(self._orders)).numpy()
        return self._batches(order)

    def _batches(self, order: np.ndarray | None) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        for start in range(0, len(self.features), self.batch_size):
            rows = slice(start, start + self.batch_size) if order is None else order[start:start + self.batch_size]
            yield tf.constant(self.features[rows]), tf.constant(self.labels[rows])

    def dataset(self) -> tf.data.Dataset:
        """The same batches as a tf.data pipeline (row indices batched, the rows gathered per batch)."""
        features, labels = self.features, self.labels

        def rows(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return features[batch], labels[batch]

        def gather(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            values, batch_labels = tf.numpy_function(
                rows, [batch], (tf.as_dtype(features.dtype), tf.as_dtype(labels.dtype)), stateful=False
            )
            values.set_shape((None, *features.shape[1:]))
            batch_labels.set_shape((None, *labels.shape[1:]))
            return values, batch_labels

        return self._indices.batch(self.batch_size).map(gather).prefetch(tf.data.AUTOTUNE)


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
