"""Classification metrics from true and predicted labels, with numpy only.

The evaluate views (GUI and scripts) need a confusion matrix and per-class
precision and recall; keeping them here means they are computed the same way
everywhere and tested against hand-computed values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs as an ``(n, n)`` int64 array.

    Row ``i`` holds the images whose true class is ``i``; column ``j`` those
    predicted as ``j``, so the diagonal counts the correct predictions.
    Raises ValueError when the label arrays differ in length or hold a label
    outside ``0..n-1``.
    """
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length. Received: {true.size} and {pred.size} labels."
        )
    if n < 1:
        raise ValueError(f"The number of classes must be at least 1. Received: n={n!r}")
    for name, labels in (("y_true", true), ("y_pred", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= n):
            raise ValueError(
                f"{name} holds labels outside 0..{n - 1}. Received: min={labels.min()}, max={labels.max()}"
            )
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def per_class_precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision and recall from a confusion matrix (rows = true class).

    Precision of class ``j`` is the share of images predicted as ``j`` that
    really are ``j`` (diagonal over the column sum); recall of class ``i`` is
    the share of true ``i`` images predicted as ``i`` (diagonal over the row
    sum). A class never predicted has an undefined precision and a class with
    no images an undefined recall: those entries are NaN, not 0, so a view can
    show them as "no data" instead of as a bad score.
    """
    matrix = np.asarray(cm, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"A confusion matrix must be square. Received shape {matrix.shape}.")
    diagonal = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, diagonal / predicted, np.nan)
        recall = np.where(actual > 0, diagonal / actual, np.nan)
    return precision, recall


def accuracy(cm: np.ndarray) -> float:
    """The share of correct predictions (trace over total); NaN for an empty matrix."""
    matrix = np.asarray(cm)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 score, ``2 TP / (2 TP + FP + FN)``, from a confusion matrix.

    It equals the harmonic mean of precision and recall where both are
    defined, and is 0 for a class that has images but is never predicted
    correctly (sklearn's ``zero_division=0``). Only a class that neither has
    images nor is ever predicted gets NaN.
    """
    matrix = _square(cm)
    diagonal = np.diag(matrix)
    denominator = 2 * diagonal + (matrix.sum(axis=0) - diagonal) + (matrix.sum(axis=1) - diagonal)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * diagonal / denominator, np.nan)


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """The confusion matrix with each row divided by its sum: row ``i`` shows where class ``i`` went.

    A row with no images stays all zeros rather than NaN, so a heat map shows
    it as empty.
    """
    matrix = _square(cm)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), 0.0)


def top_k_accuracy(probabilities: np.ndarray, y_true: Sequence[int] | np.ndarray, k: int) -> float:
    """The share of images whose true class is among the ``k`` most probable; NaN with no images.

    Ties are broken by class order (the earlier class ranks first), the same
    way every time. ``k`` larger than the number of classes counts every
    image as a hit.
    """
    scores = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(y_true, dtype=np.int64).ravel()
    if scores.ndim != 2 or scores.shape[0] != true.size:
        raise ValueError(
            "probabilities must be (images, classes) with one row per label. "
            f"Received: probabilities of shape {scores.shape} and {true.size} labels."
        )
    if k < 1:
        raise ValueError(f"k must be at least 1. Received: k={k!r}")
    if not true.size:
        return float("nan")
    ranking = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(ranking == true[:, None], axis=1)))


def _square(cm: np.ndarray) -> np.ndarray:
    matrix = np.asarray(cm, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"A confusion matrix must be square. Received shape {matrix.shape}.")
    return matrix
