"""Compare cut tensors before training: a quick linear classifier on each cut's features.

How well a plain linear classifier separates the classes from a tensor's
features is a cheap, honest preview of how good a cut is (the "linear probe"
of representation studies). :func:`compare_cuts` runs the base once over the
training and validation images, taking every requested tensor from the same
forward pass (4-D tensors averaged over their positions, as the default head
does), then fits a multinomial logistic regression on each and reports its
validation accuracy, the feature size and the fitting time.

The fit is full-batch gradient descent with Nesterov momentum for a fixed
number of steps on standardised features, with the step size set from the
largest curvature of the loss (a few power iterations), so it needs no
tuning and gives the same result every time.

:func:`extract_features` is the one place features are computed. It goes
through the feature cache (:mod:`tlstudio.core.data.feature_cache`): each tensor's
pooled features are looked up under the same key training uses for a head
with that cut and pooling ("avg" for 4-D tensors, "flatten" for 3-D and 5-D
ones), so a comparison and a later training share entries; only the images
some tensor lacks go through the base, in one pass for all such tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tlstudio.core.data import feature_cache
from tlstudio.core.spec import anatomy
from tlstudio.core.spec.errors import Cancelled, DataError, UserError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop

STEPS = 300
"""Gradient steps of each linear fit."""
L2 = 1e-3
"""Weight decay of the linear fit, relative to standardised features."""
BATCH_SIZE = 32


@dataclass(frozen=True)
class CutResult:
    """One cut's row: pooled feature size, accuracy of the linear classifier on the
    validation and training images, and the seconds its fit took (the shared
    feature extraction is not included)."""

    tensor: str
    feature_size: int
    val_accuracy: float
    seconds: float
    train_accuracy: float = float("nan")


def default_cuts(infos: Sequence[Any], default_cut: str | None) -> list[str]:
    """The cuts compared when none are chosen: the last cut tensor of each block (each VGG pool)
    and the default cut, in layer order. ``infos`` is the base's tensor catalogue."""
    last_of_block: dict[str, str] = {}
    for info in infos:
        if info.cuttable and info.block:
            last_of_block[info.block] = info.name
    chosen = set(last_of_block.values()) | ({default_cut} if default_cut else set())
    return [info.name for info in infos if info.name in chosen]


def compare_cuts(
    base: Any,
    dataset: Any,
    tensor_names: Sequence[str],
    input_size: int,
    preprocessing: str,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> list[CutResult]:
    """One :class:`CutResult` per tensor of ``tensor_names`` (in that order, duplicates once).

    ``base`` is the base model, ``dataset`` a scanned
    :class:`~tlstudio.core.data.dataset.Dataset` (its train and val splits are
    used), ``preprocessing`` the base's mode ("caffe", "lite", "none").
    Raises TensorNameError for a name that is not a cut tensor, DataError
    when a split has no images; Cancelled when ``should_stop()`` turns true.
    """
    names = list(dict.fromkeys(name.strip() for name in tensor_names))
    if not names:
        raise UserError("Name at least one cut tensor to compare, e.g. block3_pool:0. Received: no tensor names.")
    if not dataset.train or not dataset.val:
        missing = "training" if not dataset.train else "validation"
        raise DataError(f"Comparing cuts needs training and validation images; the data has no {missing} images.")
    classes = len(dataset.classes)
    started = time.perf_counter()
    items = list(dataset.train) + list(dataset.val)
    features = extract_features(base, items, names, input_size, preprocessing, on_event, should_stop)
    on_event(Message(f"Extracted features of {len(items)} images in {time.perf_counter() - started:.1f} s", "info"))
    labels = np.asarray([item.label for item in items], dtype=np.int64)
    train = np.arange(len(dataset.train))
    val = np.arange(len(dataset.train), len(items))
    results = []
    for done, name in enumerate(names):
        if should_stop():
            raise Cancelled("Cut comparison cancelled.")
        on_event(Progress("compare-cuts", done, len(names), f"Fitting a linear classifier on {name}"))
        values = features[name]
        fit_started = time.perf_counter()
        probe = LinearProbe.fit(values[train], labels[train], classes)
        results.append(
            CutResult(
                tensor=name,
                feature_size=int(values.shape[1]),
                val_accuracy=probe.accuracy(values[val], labels[val]),
                seconds=time.perf_counter() - fit_started,
                train_accuracy=probe.accuracy(values[train], labels[train]),
            )
        )
    on_event(Progress("compare-cuts", len(names), len(names), "Done"))
    return results


def extract_features(
    base: Any,
    items: Sequence[Any],
    tensor_names: Sequence[str],
    input_size: int,
    preprocessing: str,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    *,
    base_label: str | None = None,
) -> dict[str, np.ndarray]:
    """Pooled features ``(images, size)`` of each tensor for ``items`` (with ``path`` and ``label``).

    4-D tensors are averaged over their positions; other tensors are
    flattened. Features the feature cache holds are read from it; the images
    any tensor lacks go through the base once, every such tensor taken from
    the same forward pass, and are stored. ``base_label`` names the base in
    the cache key as training does (the recipe's base name, or the model
    file's path); by default :func:`base_label_of` the model. A Message
    reports how many came from the cache. Progress events have task
    "features"; an unreadable image raises ImageError.
    """
    names = list(dict.fromkeys(tensor_names))
    _check_input_size(base, input_size)
    cache = feature_cache.FeatureCache()
    if not items or cache.limit_bytes <= 0:
        features = _extract(base, items, names, input_size, preprocessing, on_event, should_stop)
        if items:
            on_event(Message("Feature cache: off; every feature was extracted.", "info"))
        return features
    label = base_label_of(base) if base_label is None else str(base_label)
    try:
        keys = {name: _cache_key(base, name, input_size, preprocessing, label) for name in names}
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the cache is never needed for correctness
        features = _extract(base, items, names, input_size, preprocessing, on_event, should_stop)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        on_event(Message(f"Feature cache: not used ({reason}); every feature was extracted.", "warning"))
        return features
    out: dict[str, np.ndarray] = {}
    needed: dict[str, list[Any]] = {}
    for name in names:
        try:
            out[name], _ = cache.features(keys[name], items, _defer)
        except _Missing as missing:
            needed[name] = missing.items
    fresh: dict[str, np.ndarray] = {}
    rows: dict[int, int] = {}
    if needed:
        positions = {id(item): index for index, item in enumerate(items)}
        union = sorted({positions[id(item)] for wanted in needed.values() for item in wanted})
        chosen = [items[index] for index in union]
        fresh = _extract(base, chosen, list(needed), input_size, preprocessing, on_event, should_stop)
        rows = {id(item): row for row, item in enumerate(chosen)}
    else:
        on_event(Progress("features", len(items), len(items), "Features from the feature cache"))
    uses: dict[str, feature_cache.CacheUse] = {}
    for name in needed:

        def extract(missing: list[Any], name: str = name) -> np.ndarray:
            if all(id(item) in rows for item in missing):
                return fresh[name][[rows[id(item)] for item in missing]]
            # The cache lost rows between the look-up and now (another process evicted them).
            return _extract(base, missing, [name], input_size, preprocessing, on_event, should_stop)[name]

        out[name], uses[name] = cache.features(keys[name], items, extract)
    from_cache = sum(use.from_cache for use in uses.values()) + len(items) * (len(names) - len(needed))
    notes = "; ".join(dict.fromkeys(use.note for use in uses.values() if use.note))
    extracted = len(rows)
    on_event(
        Message(
            f"Feature cache: {from_cache} of {len(items) * len(names)} image features "
            f"({len(items)} images x {len(names)} tensors) read from the cache; "
            + (f"{extracted} images extracted for {', '.join(needed)}" if needed else "nothing extracted")
            + (f"; the cache {notes}" if notes else "")
            + f" (cache folder {cache.root}).",
            "warning" if notes else "info",
        )
    )
    return {name: out[name] for name in names}


def base_label_of(base: Any) -> str:
    """How training's feature-cache keys name ``base``: the recipe's base name for the built-in bases.

    The zoo builds its models under Keras' names; a user's model file is
    keyed by its path in training, which the model does not know, so its own
    name is used here (its features are shared between comparisons, not with
    training; pass ``base_label`` to :func:`extract_features` to share them).
    """
    from tlstudio.core.spec.bases import base_for_keras_name

    name = str(getattr(base, "name", "") or "base")
    known = base_for_keras_name(name)
    return known.name if known is not None else name


class _Missing(Exception):
    """Raised by :func:`_defer` to learn which images the cache lacks without extracting them."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(f"{len(items)} images not cached")
        self.items = items


def _defer(items: list[Any]) -> np.ndarray:
    raise _Missing(items)


def _cache_key(base: Any, name: str, input_size: int, preprocessing: str, label: str) -> "feature_cache.FeatureSetKey":
    """The key training uses for a classifier cut at ``name`` whose head pools as this comparison does.

    The frozen part is built as training builds it (the classifier, split
    after its weightless pooling or flattening), so the structure and
    weights digests are the same; 4-D tensors pool by average ("avg"),
    3-D and 5-D ones flatten ("flatten"), 2-D ones are used as they are.
    """
    import dataclasses

    import keras

    from tlstudio.core.model.classifier import build_classifier
    from tlstudio.core.spec.recipe import HeadSpec
    from tlstudio.core.model.tensors import cut_model

    rank = len(cut_model(base, name).outputs[0].shape)
    spec = HeadSpec(pooling="avg" if rank == 4 else "flatten", batch_norm=False)
    model = build_classifier(base, name, 2, spec, preprocessing)
    pooled = [layer for layer in model.layers if layer.name in anatomy.FLATTENING_NAMES]
    boundary = pooled[0].output if pooled else model.get_layer(anatomy.PREDICTIONS_NAME).input
    frozen = keras.Model(model.inputs, boundary, name="frozen_part")
    key = feature_cache.feature_set_key(frozen, label, name)
    if not key.input_size:
        # A base without a fixed input size: the images are resized to input_size, which the model cannot tell.
        key = dataclasses.replace(key, input_size=int(input_size))
    return key


def _extract(
    base: Any,
    items: Sequence[Any],
    tensor_names: Sequence[str],
    input_size: int,
    preprocessing: str,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> dict[str, np.ndarray]:
    """The pooled features of ``items`` for each tensor, from one forward pass of the base per batch."""
    from tlstudio.core.data import pipeline

    model = _feature_model(base, tensor_names, input_size, preprocessing)
    labels = max((int(item.label) for item in items), default=0) + 1
    batches = pipeline.image_batches(items, labels, input_size, BATCH_SIZE, shuffle=False)
    parts: list[list[np.ndarray]] = [[] for _ in tensor_names]
    done = 0
    with pipeline.image_errors_surfaced():
        for images, _ in batches:
            if should_stop():
                raise Cancelled("Feature extraction cancelled.")
            outputs = model(images, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for part, value in zip(parts, outputs):
                part.append(np.asarray(value, dtype=np.float32))
            done += int(images.shape[0])
            on_event(Progress("features", done, len(items), "Extracting features"))
    return {
        name: np.concatenate(part) if part else np.zeros((0, 0), dtype=np.float32)
        for name, part in zip(tensor_names, parts)
    }


@dataclass(frozen=True)
class LinearProbe:
    """A multinomial logistic regression on standardised features."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, classes: int, steps: int = STEPS, l2: float = L2
    ) -> "LinearProbe":
        """Fit by full-batch Nesterov gradient descent for ``steps`` steps (deterministic)."""
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-8] = 1.0
        x = (x - mean) / scale
        n, d = x.shape
        targets = np.zeros((n, classes))
        targets[np.arange(n), labels] = 1.0
        rate = 1.0 / (0.5 * _largest_eigenvalue(x) + 0.5 + l2)
        params = np.zeros((d + 1, classes))
        velocity = np.zeros_like(params)
        momentum = 0.9
        for _ in range(steps):
            ahead = params + momentum * velocity
            gradient = _gradient(x, targets, ahead, l2)
            velocity = momentum * velocity - rate * gradient
            params = params + velocity
        return cls(mean=mean, scale=scale, weights=params[:-1], bias=params[-1])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The predicted class of each row."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.argmax(x @ self.weights + self.bias, axis=1)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """The share of rows predicted as their label; NaN with no rows."""
        if not len(labels):
            return float("nan")
        return float(np.mean(self.predict(features) == np.asarray(labels)))


def _gradient(x: np.ndarray, targets: np.ndarray, params: np.ndarray, l2: float) -> np.ndarray:
    weights, bias = params[:-1], params[-1]
    logits = x @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    error = (probabilities - targets) / len(x)
    return np.vstack([x.T @ error + l2 * weights, error.sum(axis=0, keepdims=True)])


def _largest_eigenvalue(x: np.ndarray, iterations: int = 20) -> float:
    """The largest eigenvalue of ``x.T @ x / n`` by power iteration from a fixed start."""
    n, d = x.shape
    if not n or not d:
        return 0.0
    vector = np.ones(d) / np.sqrt(d)
    value = 0.0
    for _ in range(iterations):
        product = x.T @ (x @ vector) / n
        value = float(np.linalg.norm(product))
        if value == 0.0:
            return 0.0
        vector = product / value
    return value


def _feature_model(base: Any, tensor_names: Sequence[str], input_size: int, preprocessing: str) -> Any:
    """Raw image -> preprocessing -> base -> every requested tensor, 4-D ones averaged over positions."""
    import keras

    from tlstudio.core.model.preprocess import Preprocess
    from tlstudio.core.model.tensors import cut_model

    _check_input_size(base, input_size)
    outputs = [cut_model(base, name).outputs[0] for name in tensor_names]
    tapped = keras.Model(base.inputs[0], outputs, name="cut_features")
    image = keras.Input((input_size, input_size, 3), dtype="float32", name="image")
    values = tapped(Preprocess(preprocessing)(image))
    values = values if isinstance(values, (list, tuple)) else [values]
    pooled = []
    for value in values:
        if len(value.shape) == 4:
            value = keras.layers.GlobalAveragePooling2D()(value)
        elif len(value.shape) > 2:
            value = keras.layers.Flatten()(value)
        pooled.append(value)
    return keras.Model(image, pooled, name="cut_comparison")


def _check_input_size(base: Any, input_size: int) -> None:
    shape = tuple(base.inputs[0].shape[1:3])
    if None not in shape and shape != (input_size, input_size):
        raise UserError(
            f"The base model takes {shape[0]}x{shape[1]} images but the comparison was asked for {input_size}x"
            f"{input_size}. Build the base at the same input size. Received: input_size={input_size!r}"
        )
