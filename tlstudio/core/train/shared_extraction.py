"""Passes over the images shared by the workers of a cluster: each runs its share, then every worker has all.

In a multi-worker head-only run, worker ``w`` of ``W`` extracts the features
of images ``w, w + W, w + 2W, …`` of each split, through its own feature
cache (so the next run on the same cluster reads its share from there), and
the shares are all-gathered (:func:`distribute.gather_rows`): extraction, the
expensive part of a head-only run, takes a ``W``-th of the time. The other
passes through the base after training (the final validation pass of a
fine-tuned model, the training features that finalise batch norm) are shared
the same way. Before
gathering, the workers agree on how their shares ended: a stop request on one
stops all, and an unreadable image on one makes every worker check its whole
data set, so that all of them leave out the same files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tlstudio.core.data.dataset import ImageItem
from tlstudio.core.spec.errors import Cancelled, ImageError, TrainingError
from tlstudio.core.spec.events import Message, OnEvent
from tlstudio.core.train import distribute, extraction

if TYPE_CHECKING:
    import tensorflow as tf

Extract = Callable[[list[Sequence[ImageItem]]], list[np.ndarray]]
"""One row per image of each split given, in order (features, from the feature cache or extracted, or
a model's outputs)."""

EXTRACTED = "extracted or read from its cache the features of"


def shared_features(
    strategy: "tf.distribute.Strategy",
    splits: Sequence[Sequence[ImageItem]],
    extract: Extract,
    feature_shape: tuple[int, ...],
    on_event: OnEvent,
    done: str = EXTRACTED,
) -> list[np.ndarray]:
    """``extract``'s rows for every split, each worker running only its share; ``extract(splits)`` alone
    outside a multi-worker run. ``done`` says in the log what a worker did with its share."""
    worker, workers = distribute.worker_share(strategy)
    if workers == 1:
        return extract(list(splits))
    shares = [items[worker::workers] for items in splits]
    failure: ImageError | Cancelled | None = None
    local: list[np.ndarray] = []
    try:
        local = extract(shares)
    except (ImageError, Cancelled) as error:
        failure = error
    if distribute.agree(strategy, isinstance(failure, Cancelled)):
        raise failure if isinstance(failure, Cancelled) else Cancelled(
            "Another worker of the cluster stopped the run."
        )
    if distribute.agree(strategy, failure is not None):
        raise failure if failure is not None else _first_unreadable(splits)
    mine, total = sum(len(share) for share in shares), sum(len(items) for items in splits)
    on_event(Message(
        f"Worker {worker + 1} of {workers} {done} its share of the images, {mine} of {total}; the other "
        "workers' shares came from them."
    ))
    gathered = []
    for items, share, values in zip(splits, shares, local, strict=True):
        rows = values if len(share) else np.zeros((0, *feature_shape), dtype=np.float32)
        positions = np.arange(worker, len(items), workers, dtype=np.int64)
        gathered.append(distribute.gather_rows(strategy, rows, positions, len(items)))
    return gathered


def _first_unreadable(splits: Sequence[Sequence[ImageItem]]) -> ImageError:
    """The first image this worker cannot decode, after another worker found one in its share."""
    for items in splits:
        found = extraction.unreadable(items)
        if found:
            return found[0]
    raise TrainingError(
        "Another worker of the cluster cannot read an image that this worker reads: give every worker the "
        "same image files, then start all of them again."
    )
