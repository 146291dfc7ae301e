"""What the frozen part of a classifier computes for images, and images that cannot be read.

:func:`extract` runs the frozen part (base up to the cut tensor, plus the
head's weightless pooling) over image files, reporting ``Progress(task="extract")``
and honouring stop requests. :func:`cached_features` does the same through
the feature cache (:mod:`tlstudio.core.data.feature_cache`), so only images the
cache lacks are extracted.

An image that cannot be decoded during training is not a reason to stop: the
scan only reads headers, and one corrupt file among thousands should cost that
file, not the run. :class:`SkippedImages` keeps the list of such files;
:func:`without_unreadable` checks every image of a dataset once a first one
failed (so a folder with many bad files costs one retry, not one per file)
and returns the dataset without them, or raises a DataError naming the class
that no longer has enough images.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import keras
import numpy as np

from tlstudio.core.data import feature_cache, images, pipeline
from tlstudio.core.data.dataset import Dataset, ImageItem
from tlstudio.core.spec.errors import Cancelled, DataError, ImageError
from tlstudio.core.spec.recipe import Recipe
from tlstudio.core.spec.text import counted
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.train import acceleration

_VERIFY_THREADS = 4


EXTRACT_CHUNK = 2048
"""Images per ``predict`` call. Keras keeps a call's batch outputs until it joins them, a second copy
of what it returns: chunks keep that copy small while the features fill one array."""


def extract(
    frozen: "keras.Model",
    items: Sequence[ImageItem],
    input_size: int,
    batch_size: int,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    label: str = "training",
) -> np.ndarray:
    """The frozen part's output for every item, in order, as float32; ImageError for an unreadable file."""
    if not items:
        return np.zeros((0, *frozen.output_shape[1:]), dtype=np.float32)
    classes_count = max(item.label for item in items) + 1
    progress = _ExtractProgress(len(items), batch_size, on_event, should_stop, label)
    acceleration.configure_jit(frozen)
    features: np.ndarray | None = None
    for start in range(0, len(items), EXTRACT_CHUNK):
        chunk = items[start:start + EXTRACT_CHUNK]
        batches = pipeline.image_batches(chunk, classes_count, input_size, batch_size, shuffle=False)
        progress.offset, progress.end = start, start + len(chunk)
        with pipeline.image_errors_surfaced():
            values = frozen.predict(batches, verbose=0, callbacks=[progress])
        if features is None:
            features = np.empty((len(items), *values.shape[1:]), dtype=np.float32)
        features[start:start + len(chunk)] = values
    assert features is not None
    return features


def cached_features(
    frozen: "keras.Model",
    key: feature_cache.FeatureSetKey,
    splits: Sequence[tuple[Sequence[ImageItem], str]],
    input_size: int,
    batch_size: int,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> list[np.ndarray]:
    """The features of each ``(items, label)`` split, from the cache where it holds them.

    ``key`` is ``frozen``'s :func:`~tlstudio.core.data.feature_cache.feature_set_key`
    (hashing the weights is not free: a run computes it once). Only images the
    cache lacks for this base, weights, cut, input size, preprocessing and
    pooling are extracted; an unreadable image raises ImageError (nothing of
    the failed split is stored).
    """
    cache = feature_cache.FeatureCache()
    features, uses = [], []
    for items, label in splits:

        def run(missing: list, label: str = label) -> np.ndarray:
            return extract(frozen, missing, input_size, batch_size, on_event, should_stop, label)

        values, use = cache.features(key, items, run)
        if not use.extracted:
            on_event(Progress("extract", len(items), len(items), f"features of the {label} images (from the feature cache)"))
        features.append(values)
        uses.append(use)
    from_cache = sum(use.from_cache for use in uses)
    extracted = sum(use.extracted for use in uses)
    notes = "; ".join(dict.fromkeys(use.note for use in uses if use.note))
    on_event(
        Message(
            f"Feature cache: {counted(from_cache, 'image')} read from the cache, {extracted:,} extracted"
            + (f"; the cache {notes}" if notes else "")
            + f" (cache folder {cache.root}; clear it with 'tlstudio cache clear').",
            "warning" if notes and "off" not in notes else "info",
        )
    )
    return features


def base_label(recipe: Recipe) -> str:
    """How the feature cache lists a recipe's base model: its name, or the model file's path."""
    return recipe.base.model_file if recipe.base.name == "file" and recipe.base.model_file else recipe.base.name


@dataclass
class SkippedImages:
    """Images left out of a run because they cannot be decoded, as ``(path, reason)`` in the order found."""

    files: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def paths(self) -> set[str]:
        return {path for path, _ in self.files}


def without_unreadable(
    dataset: Dataset, first: ImageError, skipped: SkippedImages, on_event: OnEvent
) -> Dataset:
    """``dataset`` without ``first``'s file and every other training or validation image that cannot be decoded.

    Each skipped file is named in a warning and added to ``skipped``. Raises
    DataError when a class no longer has enough images to train on.
    """
    candidates = [item for item in (*dataset.train, *dataset.val) if item.path != first.path]
    found = [first, *unreadable(candidates)]
    bad = {error.path for error in found}
    for error in found:
        skipped.files.append((error.path, error.reason))
        on_event(Message(f"Skipped the image {error.path!r}: it cannot be read ({error.reason}).", "warning"))
    remaining = dataclasses.replace(
        dataset,
        train=tuple(item for item in dataset.train if item.path not in bad),
        val=tuple(item for item in dataset.val if item.path not in bad),
    )
    problems = remaining.problems()
    if problems:
        raise DataError(
            f"Training stopped: {counted(len(skipped), 'image')} cannot be read "
            f"(the first: {skipped.files[0][0]!r}) "
            "and without them " + " ".join(problems) + " Replace the unreadable files, then train again."
        )
    return remaining


def retrying(work: Callable[[], object], on_unreadable: Callable[[ImageError], None]):
    """``work()``, called again after ``on_unreadable`` handled each ImageError it raised."""
    while True:
        try:
            with pipeline.image_errors_surfaced():
                return work()
        except ImageError as error:
            on_unreadable(error)


def unreadable(items: Sequence[ImageItem]) -> list[ImageError]:
    """The decoding error of every item that cannot be decoded, in item order."""

    def check(item: ImageItem) -> ImageError | None:
        try:
            images.load_rgb(item.path, 8)
        except ImageError as error:
            return error
        except (OSError, ValueError, MemoryError) as error:
            return ImageError(str(item.path), f"cannot decode: {error}")
        return None

    with ThreadPoolExecutor(_VERIFY_THREADS) as pool:
        return [error for error in pool.map(check, items) if error is not None]


class _ExtractProgress(keras.callbacks.Callback):
    """Progress and cancellation while features are extracted."""

    def __init__(self, total: int, batch_size: int, on_event: OnEvent, should_stop: ShouldStop, label: str) -> None:
        super().__init__()
        self.offset, self.end = 0, total
        """This ``predict`` call's items: ``offset`` to ``end`` of ``total`` (extraction runs in chunks)."""
        self.total = total
        self.batch_size = batch_size
        self.on_event = on_event
        self.should_stop = should_stop
        self.label = label

    def on_predict_begin(self, logs=None) -> None:
        self.on_event(Progress("extract", self.offset, self.total, f"features of the {self.label} images"))

    def on_predict_batch_end(self, batch, logs=None) -> None:
        done = min(self.end, self.offset + (batch + 1) * self.batch_size)
        self.on_event(Progress("extract", done, self.total, f"features of the {self.label} images"))
        if self.should_stop():
            raise Cancelled("Feature extraction was cancelled.")
