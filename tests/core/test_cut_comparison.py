"""Cut comparison: one row per tensor from a single feature pass, and a linear probe that learns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tlstudio.core.cut_comparison import CutResult, LinearProbe, compare_cuts, extract_features
from tlstudio.core.dataset import scan_dataset
from tlstudio.core.errors import Cancelled, DataError, TensorNameError
from tlstudio.core.events import Message, Progress
from tlstudio.core.images import load_rgb
from tlstudio.core.preprocess import Preprocess
from tlstudio.core.samples import make_sample_folders, make_tiny_vgg
from tlstudio.core.tensors import cut_model

CUTS = ["block1_pool:0", "block3_pool:0", "flatten:0", "fc2:0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return scan_dataset([make_sample_folders(tmp_path_factory.mktemp("cuts") / "images", per_class=8, size=32)])


@pytest.fixture(scope="module")
def base():
    return make_tiny_vgg(include_top=True)


def test_one_row_per_tensor_in_the_order_asked(base, dataset):
    events = []
    results = compare_cuts(base, dataset, CUTS + ["fc2:0"], 32, "lite", on_event=events.append)
    assert [r.tensor for r in results] == CUTS
    assert all(isinstance(r, CutResult) for r in results)
    assert [r.feature_size for r in results] == [4, 8, 128, 16]  # 4-D tensors pooled, flatten as is
    for result in results:
        assert 0.0 <= result.val_accuracy <= 1.0 and result.seconds >= 0.0
    assert results[1].val_accuracy >= 0.8  # the sample classes differ by colour: easy from any cut
    assert any(isinstance(e, Progress) and e.task == "features" for e in events)
    assert any(isinstance(e, Message) and "Extracted features" in e.text for e in events)


def test_features_come_from_one_pass_and_match_the_cut_model(base, dataset):
    items = dataset.train[:5]
    features = extract_features(base, items, ["block2_pool:0", "fc1:0"], 32, "lite")
    assert features["block2_pool:0"].shape == (5, 8) and features["fc1:0"].shape == (5, 16)
    images = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    expected = cut_model(base, "fc1:0")(Preprocess("lite")(images))
    assert features["fc1:0"] == pytest.approx(np.asarray(expected), abs=1e-4)


def test_bad_names_and_missing_splits_are_refused(base, dataset):
    with pytest.raises(TensorNameError, match="block3_pool:0"):
        compare_cuts(base, dataset, ["block3_pool"], 32, "lite")
    empty = dataclasses.replace(dataset, val=())
    with pytest.raises(DataError, match="no validation images"):
        compare_cuts(base, empty, ["fc2:0"], 32, "lite")
    with pytest.raises(Cancelled):
        compare_cuts(base, dataset, ["fc2:0"], 32, "lite", should_stop=lambda: True)


def test_the_linear_probe_separates_separable_data_deterministically():
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(0, 1, (60, 3))
    first = LinearProbe.fit(features, labels, 3)
    second = LinearProbe.fit(features, labels, 3)
    assert first.accuracy(features, labels) >= 0.95
    assert np.array_equal(first.weights, second.weights)
    constant = np.ones((6, 2))
    assert LinearProbe.fit(constant, np.array([0, 1] * 3), 2).accuracy(constant, np.array([0] * 6)) in (0.0, 1.0)
