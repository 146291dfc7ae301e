"""Confusion matrix, precision and recall against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlstudio.core.use.metrics import accuracy, confusion_matrix, per_class_precision_recall


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [
        [2, 1, 0],
        [0, 1, 1],
        [1, 0, 3],
    ]
    assert cm.dtype == np.int64


def test_precision_and_recall_by_hand():
    cm = np.array([[2, 1, 0], [0, 1, 1], [2, 0, 3]])
    precision, recall = per_class_precision_recall(cm)
    assert precision == pytest.approx([2 / 4, 1 / 2, 3 / 4])
    assert recall == pytest.approx([2 / 3, 1 / 2, 3 / 5])
    cm2 = np.array([[5, 0], [3, 2]])
    precision, recall = per_class_precision_recall(cm2)
    assert precision == pytest.approx([5 / 8, 1.0])
    assert recall == pytest.approx([1.0, 2 / 5])
    assert accuracy(cm2) == pytest.approx(7 / 10)


def test_undefined_precision_and_recall_are_nan():
    cm = np.array([[3, 0, 0], [1, 0, 0], [0, 0, 0]])
    precision, recall = per_class_precision_recall(cm)
    assert precision[0] == pytest.approx(3 / 4)
    assert math.isnan(precision[1]) and math.isnan(precision[2])
    assert recall[0] == 1.0 and recall[1] == 0.0
    assert math.isnan(recall[2])


def test_bad_labels_are_refused_with_the_value():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], 2)
