"""Cut comparison: one row per tensor from a single feature pass, and a linear probe that learns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tlstudio.core.use.cut_comparison import CutResult, LinearProbe, compare_cuts, extract_features
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import Cancelled, DataError, TensorNameError
from tlstudio.core.spec.text import counted
from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.data.images import load_rgb
from tlstudio.core.model.preprocess import Preprocess
from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg
from tlstudio.core.model.tensors import cut_model

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


# ----- the feature cache -------------------------------------------------------------------------------------


class _Passes:
    """Wraps the comparison's extraction to record each forward pass: (images, tensors)."""

    def __init__(self, monkeypatch) -> None:
        from tlstudio.core.use import cut_comparison

        self.calls: list[tuple[int, tuple[str, ...]]] = []
        original = cut_comparison._extract

        def counted(base, items, names, *args):
            self.calls.append((len(items), tuple(names)))
            return original(base, items, names, *args)

        monkeypatch.setattr(cut_comparison, "_extract", counted)


def _cache_messages(events) -> list[str]:
    return [e.text for e in events if isinstance(e, Message) and e.text.startswith("Feature cache")]


def test_cached_features_equal_uncached_ones_and_a_second_comparison_extracts_nothing(base, dataset, monkeypatch):
    items = list(dataset.train) + list(dataset.val)
    names = ["block2_pool:0", "flatten:0", "fc1:0"]
    monkeypatch.setenv("TLSTUDIO_FEATURE_CACHE_MB", "0")
    uncached = extract_features(base, items, names, 32, "lite")
    monkeypatch.delenv("TLSTUDIO_FEATURE_CACHE_MB")
    passes = _Passes(monkeypatch)
    events: list = []
    first = compare_cuts(base, dataset, names, 32, "lite", on_event=events.append)
    assert passes.calls == [(len(items), tuple(names))], "one forward pass for every tensor"
    assert "0 of" in _cache_messages(events)[0]
    cold = extract_features(base, items, names, 32, "lite")  # now every row comes from the cache
    assert len(passes.calls) == 1
    for name in names:
        np.testing.assert_allclose(cold[name], uncached[name], rtol=1e-6, atol=1e-6)
    events.clear()
    second = compare_cuts(base, dataset, names, 32, "lite", on_event=events.append)
    assert len(passes.calls) == 1, "the second comparison extracted nothing"
    assert f"{len(items) * 3} of {len(items) * 3} image features" in _cache_messages(events)[0]
    assert "nothing extracted" in _cache_messages(events)[0]
    assert any(isinstance(e, Progress) and e.task == "features" and e.done == e.total for e in events)
    assert [(r.tensor, r.feature_size, r.val_accuracy, r.train_accuracy) for r in second] == [
        (r.tensor, r.feature_size, r.val_accuracy, r.train_accuracy) for r in first
    ]


def test_only_the_tensors_and_images_the_cache_lacks_are_extracted_in_one_pass(base, dataset, monkeypatch):
    items = list(dataset.train) + list(dataset.val)
    passes = _Passes(monkeypatch)
    extract_features(base, items[:10], ["block1_pool:0", "block3_pool:0"], 32, "lite")
    events: list = []
    features = extract_features(base, items, ["block3_pool:0", "fc2:0"], 32, "lite", on_event=events.append)
    # block3_pool lacks items[10:], fc2 lacks everything: one pass over the union, with both tensors.
    assert passes.calls[1] == (len(items), ("block3_pool:0", "fc2:0"))
    assert len(passes.calls) == 2
    assert f"10 of {2 * len(items)} image features" in _cache_messages(events)[0]
    fresh = extract_features(base, items[10:], ["block3_pool:0"], 32, "lite")
    assert len(passes.calls) == 2
    np.testing.assert_allclose(features["block3_pool:0"][10:], fresh["block3_pool:0"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cut", ["block3_pool:0", "fc2:0"])
def test_the_comparison_uses_the_key_training_uses(base, cut):
    from tlstudio.core.use import cut_comparison
    from tlstudio.core.data import feature_cache
    from tlstudio.core.train import batch_norm
    from tlstudio.core.model.classifier import build_classifier
    from tlstudio.core.spec.recipe import HeadSpec

    model = build_classifier(base, cut, 3, HeadSpec(hidden_units=(8,), dropout=0.1), "caffe")
    expected = feature_cache.feature_set_key(batch_norm.split_head(model)[0], "vgg16", cut)
    assert cut_comparison._cache_key(base, cut, 32, "caffe", "vgg16") == expected


def test_a_training_after_a_comparison_reads_its_features_from_the_cache(image_root, tmp_path, monkeypatch):
    from tlstudio.core.train import extraction, training
    from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, TrainSpec

    vgg = make_tiny_vgg()
    vgg.name = "vgg16"  # as the zoo builds it, so the cache names it as a recipe with base vgg16 does
    data = scan_dataset([image_root])
    compare_cuts(vgg, data, ["block3_pool:0"], 32, "caffe")
    extracted: list[int] = []
    original = extraction.extract
    monkeypatch.setattr(
        extraction, "extract", lambda frozen, items, *args: extracted.append(len(items)) or original(frozen, items, *args)
    )
    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        cut_tensor="block3_pool:0",
        training=TrainSpec(epochs=1, batch_size=8, learning_rate=1e-2, early_stopping_patience=0),
    )
    events: list = []
    training.train(recipe, base_model=vgg, on_event=events.append, out_dir=tmp_path / "run")
    total = len(data.train) + len(data.val)
    assert sum(extracted) == 0
    assert any(f"{counted(total, 'image')} read from the cache, 0 extracted" in text for text in _cache_messages(events))


def test_default_cuts_are_each_block_end_and_the_default_cut_in_layer_order():
    from tlstudio.core.model.tensors import catalogue, default_cut_tensor
    from tlstudio.core.use.cut_comparison import default_cuts

    tiny = make_tiny_vgg()
    infos = catalogue(tiny)
    assert default_cuts(infos, default_cut_tensor(tiny)) == ["block1_pool:0", "block2_pool:0", "block3_pool:0"]
    assert default_cuts(infos, "block2_conv1:0") == ["block1_pool:0", "block2_conv1:0", "block2_pool:0",
                                                     "block3_pool:0"]
    with_top = make_tiny_vgg(include_top=True)
    assert default_cuts(catalogue(with_top), default_cut_tensor(with_top))[-1] == "fc2:0"
