"""Batches of features for the head, without copying the features.

``tf.data.Dataset.from_tensor_slices(features)`` copies every feature into a
TensorFlow constant, and ``.shuffle(len(features))`` keeps a second copy, one
small tensor per image, in its buffer: together several times the features'
own size, which grows a head-only run's memory by tens of kilobytes per image.
:func:`feature_batches` instead reads each batch out of the array it is given
(in memory or memory-mapped from the feature cache), in a new random order
each epoch, so memory beyond the features themselves stays one batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


def batch_indices(count: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index batches covering ``range(count)`` once: shuffled with ``rng``, in order without.

    Each batch's indices are sorted, so a memory-mapped array is read forwards.
    """
    order = rng.permutation(count) if rng is not None else np.arange(count)
    for start in range(0, count, batch_size):
        chunk = order[start : start + batch_size]
        yield np.sort(chunk) if rng is not None else chunk


def feature_batches(
    features: np.ndarray, labels: np.ndarray, batch_size: int, seed: int | None = None
) -> "tf.data.Dataset":
    """A dataset of ``(features, labels)`` batches read from ``features`` as it is iterated.

    With ``seed``, each pass (epoch) visits the rows in a new order drawn from
    it (reproducible for the same seed); without, in order (validation).
    """
    import tensorflow as tf

    if len(features) != len(labels):
        raise ValueError(f"features and labels differ in length: {len(features)} and {len(labels)}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed) if seed is not None else None

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in batch_indices(len(labels), batch_size, rng):
            yield np.asarray(features[index], dtype=np.float32), labels[index]

    signature = (
        tf.TensorSpec((None, *features.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.as_dtype(labels.dtype)),
    )
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.prefetch(2)
