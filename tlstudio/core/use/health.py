"""Data health: likely mislabelled images, near-duplicates and outliers, from the cut features.

Every image's features at the cut tensor come from the feature cache (see
:func:`cut_features`), so the check costs one pass of the base at most. Then:

* **out-of-fold probabilities**: k seeded stratified folds, a logistic
  regression (scikit-learn) fitted on the other folds predicts each image, so
  no image is judged by a model that saw its label;
* **likely mislabelled**: cleanlab's confident learning
  (``cleanlab.filter.find_label_issues``: per-class thresholds from each
  class's average self-confidence) flags images whose given label has a low
  out-of-fold probability while another class is confident; they are ranked
  by ``1 - self-confidence`` and each suggests the most probable class;
* **near-duplicates**: pairs whose centred features are much closer (cosine
  distance) than images usually are to their nearest neighbour, marked when the two sit in different splits
  (leakage into validation) or different classes (conflicting labels);
* **outliers**: cleanlab's ``OutOfDistribution`` score from the average
  distance to the k nearest neighbours; an image is flagged when that distance
  is beyond ``Q3 + (1/0.37 - 1) * IQR`` of all images' (Datalab's rule).

cleanlab's ``Datalab`` runs these same issue managers, but it needs the
Hugging Face ``datasets`` package (and pyarrow), which would add far more to
the app than the methods themselves; the functions are called directly.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.text import counted

FOLDS = 5
DUPLICATE_RATIO = 0.5
"""Two images are near-duplicates when their cosine distance is below this share of the median distance
from an image to its nearest neighbour (Datalab's relative rule, on centred features)."""
OUTLIER_THRESHOLD = 0.37
"""Datalab's default: larger flags fewer images."""
NEIGHBOURS = 10
_BLOCK = 1024


@dataclass(frozen=True)
class Mislabeled:
    """An image whose given class looks wrong: ``score`` in [0, 1], higher is more likely wrong."""

    path: str
    given: str
    suggested: str
    score: float


@dataclass(frozen=True)
class NearDuplicate:
    """Two images whose features are nearly the same."""

    paths: tuple[str, str]
    similarity: float
    across_splits: bool
    across_classes: bool


@dataclass(frozen=True)
class Outlier:
    """An image unlike the others: ``score`` in [0, 1], higher is more unusual."""

    path: str
    score: float


@dataclass(frozen=True)
class HealthReport:
    """Every finding, each list best-first; ``probabilities`` are the out-of-fold ones, row per ``paths``."""

    mislabeled: tuple[Mislabeled, ...]
    near_duplicates: tuple[NearDuplicate, ...]
    outliers: tuple[Outlier, ...]
    paths: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    probabilities: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The ``--json`` form: the three lists of findings."""
        return {
            "mislabeled": [asdict(m) for m in self.mislabeled],
            "near_duplicates": [{**asdict(d), "paths": list(d.paths)} for d in self.near_duplicates],
            "outliers": [asdict(o) for o in self.outliers],
        }


def dataset_items(dataset: Any) -> tuple[list[Any], list[str]]:
    """Every image of a scanned dataset (train, val, test) and the split of each."""
    items, splits = [], []
    for split in ("train", "val", "test"):
        for item in getattr(dataset, split):
            items.append(item)
            splits.append(split)
    return items, splits


def cut_features(
    base: Any,
    items: Sequence[Any],
    cut_tensor: str | None,
    input_size: int,
    preprocessing: str,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    base_label: str | None = None,
) -> tuple[str, np.ndarray]:
    """The cut tensor's name (the base's default when None) and its pooled features for ``items``.

    Read through the feature cache, under the key training uses, so a check,
    a search and a training on the same images share one extraction.
    """
    from tlstudio.core.model.tensors import default_cut_tensor, resolve_tensor
    from tlstudio.core.use.cut_comparison import extract_features

    name = cut_tensor or default_cut_tensor(base)
    resolve_tensor(base, name)
    features = extract_features(
        base, items, [name], input_size, preprocessing, on_event, should_stop, base_label=base_label
    )
    return name, features[name]


def check_dataset(
    base: Any,
    dataset: Any,
    cut_tensor: str | None,
    input_size: int,
    preprocessing: str,
    folds: int = FOLDS,
    seed: int = 0,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    base_label: str | None = None,
) -> HealthReport:
    """Check every image of ``dataset`` on the cut features of ``base``; see the module docstring."""
    items, splits = dataset_items(dataset)
    if len(dataset.classes) < 2:
        raise DataError(
            "The health check compares classes, so it needs at least 2 classes with images. "
            f"Received: {counted(len(dataset.classes), 'class')}."
        )
    _, features = cut_features(base, items, cut_tensor, input_size, preprocessing, on_event, should_stop, base_label)
    return find_issues(
        features,
        np.asarray([item.label for item in items]),
        dataset.classes,
        [item.path for item in items],
        splits,
        folds=folds,
        seed=seed,
        on_event=on_event,
        should_stop=should_stop,
    )


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    folds: int = FOLDS,
    seed: int = 0,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> np.ndarray:
    """``(images, classes)`` probabilities, each row from a logistic regression that did not see that image.

    The folds are stratified and seeded; with fewer images in a class than
    ``folds``, the number of folds drops to the smallest class size (at least 2).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels, minlength=classes).min())
    if smallest < 2:
        counts = np.bincount(labels, minlength=classes)
        raise DataError(
            "Every class needs at least 2 images for the out-of-fold check (each image is judged by a model "
            f"trained on the others). Received: {counted(int((counts < 2).sum()), 'class')} with fewer than 2 images."
        )
    folds = max(2, min(int(folds), smallest))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = np.zeros((len(labels), classes))
    for done, (train, held_out) in enumerate(splitter.split(features, labels)):
        if should_stop():
            raise Cancelled("The health check was cancelled.")
        on_event(Progress("health", done, folds, f"Fitting fold {done + 1} of {folds}"))
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5))
        model.fit(features[train], labels[train])
        fitted = model.predict_proba(features[held_out])
        probabilities[np.ix_(held_out, model.classes_)] = fitted
    on_event(Progress("health", folds, folds, "Out-of-fold probabilities ready"))
    return probabilities


def find_issues(
    features: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    paths: Sequence[str],
    splits: Sequence[str],
    folds: int = FOLDS,
    seed: int = 0,
    similarity: float | None = None,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> HealthReport:
    """All three kinds of findings from features and given labels (one row per path)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(features) != len(labels) or len(labels) != len(paths):
        raise ValueError("features, labels and paths must have one row per image")
    probabilities = out_of_fold_probabilities(features, labels, len(classes), folds, seed, on_event, should_stop)
    mislabeled = _label_issues(labels, probabilities, classes, paths)
    centred = features - features.mean(axis=0)
    duplicates = _near_duplicates(centred, labels, paths, splits, similarity)
    outliers = _outliers(centred, paths)
    on_event(
        Message(
            f"Health check of {counted(len(paths), 'image')}: {len(mislabeled)} likely mislabelled, "
            f"{counted(len(duplicates), 'near-duplicate pair')}, {counted(len(outliers), 'outlier')}.",
            "info",
        )
    )
    return HealthReport(
        tuple(mislabeled), tuple(duplicates), tuple(outliers), tuple(paths), tuple(classes), probabilities
    )


def _label_issues(
    labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], paths: Sequence[str]
) -> list[Mislabeled]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    with contextlib.redirect_stdout(io.StringIO()):
        flagged = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    found = []
    for index in flagged:
        ranked = np.argsort(-probabilities[index])
        suggested = int(ranked[0]) if int(ranked[0]) != labels[index] else int(ranked[1])
        found.append(
            Mislabeled(paths[index], classes[labels[index]], classes[suggested], round(1.0 - float(quality[index]), 6))
        )
    return sorted(found, key=lambda m: -m.score)


def _near_duplicates(
    features: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str],
    splits: Sequence[str],
    similarity: float | None,
) -> list[NearDuplicate]:
    """Pairs closer (cosine distance) than ``DUPLICATE_RATIO`` x the median nearest-neighbour distance,
    or, when ``similarity`` is given, pairs whose cosine similarity is at least that."""
    if len(features) < 2:
        return []
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    starts = range(0, len(unit), _BLOCK)
    nearest = np.concatenate([1.0 - _similarities(unit, start).max(axis=1) for start in starts])
    cutoff = 1.0 - similarity if similarity is not None else DUPLICATE_RATIO * max(float(np.median(nearest)), 1e-9)
    pairs = []
    for start in starts:
        block = _similarities(unit, start)
        rows, columns = np.nonzero(1.0 - block <= cutoff)
        for row, column in zip(rows + start, columns):
            if row < column:
                pairs.append((float(min(1.0, block[row - start, column])), int(row), int(column)))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [
        NearDuplicate(
            (paths[a], paths[b]), round(value, 6), splits[a] != splits[b], bool(labels[a] != labels[b])
        )
        for value, a, b in pairs
    ]


def _similarities(unit: np.ndarray, start: int) -> np.ndarray:
    """Cosine similarities of rows ``start:start + _BLOCK`` with every row, -inf with themselves."""
    block = unit[start : start + _BLOCK] @ unit.T
    block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
    return block


def _outliers(features: np.ndarray, paths: Sequence[str]) -> list[Outlier]:
    from cleanlab.outlier import OutOfDistribution

    if len(features) < 4:
        return []
    k = min(NEIGHBOURS, len(features) - 2)
    detector = OutOfDistribution({"k": k})
    with contextlib.redirect_stdout(io.StringIO()):
        scores = detector.fit_score(features=features)
    distances, _ = detector.params["knn"].kneighbors()
    average = distances[:, :k].mean(axis=1)
    q1, q3 = np.percentile(average, [25, 75])
    limit = q3 + (1 / OUTLIER_THRESHOLD - 1) * (q3 - q1)
    found = [Outlier(paths[i], round(1.0 - float(scores[i]), 6)) for i in np.flatnonzero(average > limit)]
    return sorted(found, key=lambda o: -o.score)
