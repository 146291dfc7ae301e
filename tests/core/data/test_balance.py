"""The class-imbalance warning shared by the Data page and ``tlstudio data``."""

from __future__ import annotations

from tlstudio.core.data.balance import IMBALANCE_RATIO, imbalance_warning


def test_imbalance_threshold():
    assert IMBALANCE_RATIO == 3.0
    assert imbalance_warning({"a": 30, "b": 10}) == ""
    text = imbalance_warning({"a": 31, "b": 10})
    assert "imbalanced" in text and "'a' has 31" in text and "'b' only 10" in text and "3.1×" in text


def test_empty_and_single_classes_give_no_warning():
    assert imbalance_warning({}) == ""
    assert imbalance_warning({"a": 100}) == ""
    assert imbalance_warning({"a": 100, "empty": 0}) == ""


def test_a_custom_ratio_is_respected():
    assert imbalance_warning({"a": 15, "b": 10}, ratio=1.2) != ""
    assert imbalance_warning({"a": 15, "b": 10}, ratio=1.5) == ""
