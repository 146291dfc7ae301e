"""The feature cache: reused, invalidated by what changes features, correct, bounded, clearable, safe.

Every test uses the tiny VGG-shaped base at 32x32 (or 48x48) and 36 generated
images; extraction is counted by wrapping the extract function, never timed.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from tlstudio.core.model import classifier
from tlstudio.core.data import feature_cache
from tlstudio.core.train import batch_norm, extraction, training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import Message
from tlstudio.core.data.feature_cache import FeatureCache
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.core.data.samples import make_tiny_vgg


def _frozen(base, cut="block3_pool:0", pooling="avg"):
    model = classifier.build_classifier(base, cut, 3, HeadSpec(pooling=pooling), "caffe")
    return batch_norm.split_head(model)[0]


class _Counter:
    """An extract function over a frozen model that records how many images it was asked for."""

    def __init__(self, frozen) -> None:
        self.frozen = frozen
        self.calls: list[int] = []

    def __call__(self, items) -> np.ndarray:
        self.calls.append(len(items))
        size = int(self.frozen.input_shape[1])
        return extraction.extract(self.frozen, items, size, 8, lambda e: None, lambda: False, "test")

    @property
    def total(self) -> int:
        return sum(self.calls)


def _items(root):
    dataset = scan_dataset([root])
    return list(dataset.train) + list(dataset.val)


def _key(frozen, cut="block3_pool:0"):
    return feature_cache.feature_set_key(frozen, "tiny", cut)


def test_second_request_reads_everything_from_the_cache(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    extract = _Counter(frozen)
    cache = FeatureCache()
    first, use1 = cache.features(_key(frozen), items, extract)
    second, use2 = cache.features(_key(frozen), items, extract)
    assert (use1.from_cache, use1.extracted, use1.stored) == (0, len(items), True)
    assert (use2.from_cache, use2.extracted) == (len(items), 0)
    assert extract.calls == [len(items)]
    np.testing.assert_array_equal(first, second)
    assert cache.root == feature_cache.default_root()
    assert cache.status().entries == len(items) and cache.status().bytes >= first.nbytes


def test_cached_features_equal_fresh_ones(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.features(_key(frozen), items, _Counter(frozen))
    cached, use = cache.features(_key(frozen), items[::-1], _Counter(frozen))
    fresh = _Counter(frozen)(items[::-1])
    assert use.from_cache == len(items)
    assert cached.shape == fresh.shape == (len(items), 8)
    np.testing.assert_allclose(cached, fresh, rtol=1e-6, atol=1e-6)


def test_a_changed_image_is_the_only_one_extracted_again(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.features(_key(frozen), items, _Counter(frozen))
    changed = items[3].path
    Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(changed)
    extract = _Counter(frozen)
    values, use = cache.features(_key(frozen), items, extract)
    assert extract.calls == [1]
    assert (use.from_cache, use.extracted) == (len(items) - 1, 1)
    np.testing.assert_allclose(values[3], _Counter(frozen)([items[3]])[0], rtol=1e-5, atol=1e-6)


def test_a_moved_file_keeps_its_features(image_root, tiny_vgg, tmp_path):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.features(_key(frozen), items, _Counter(frozen))
    moved = tmp_path / "elsewhere.png"
    os.replace(items[0].path, moved)
    extract = _Counter(frozen)
    _, use = cache.features(_key(frozen), [type(items[0])(str(moved), 0, 1)], extract)
    assert use.from_cache == 1 and extract.calls == []


def test_another_cut_tensor_or_input_size_is_another_feature_set(image_root, tiny_vgg):
    items = _items(image_root)
    cache = FeatureCache()
    frozen = _frozen(tiny_vgg)
    cache.features(_key(frozen), items, _Counter(frozen))
    for other, cut in (
        (_frozen(tiny_vgg, "block2_pool:0"), "block2_pool:0"),
        (_frozen(make_tiny_vgg(input_size=48), "block3_pool:0"), "block3_pool:0"),
        (_frozen(tiny_vgg, pooling="flatten"), "block3_pool:0"),
        (_frozen(make_tiny_vgg(seed=1)), "block3_pool:0"),
    ):
        key = _key(other, cut)
        assert key.digest != _key(frozen).digest
        extract = _Counter(other)
        _, use = cache.features(key, items, extract)
        assert extract.total == len(items) and use.from_cache == 0
    assert len(cache.status().sets) == 5


def test_the_key_ignores_layer_names_and_another_head(image_root):
    first = _frozen(make_tiny_vgg())
    again = classifier.build_classifier(make_tiny_vgg(), "block3_pool:0", 5, HeadSpec(hidden_units=(4,)), "caffe")
    assert _key(first) == _key(batch_norm.split_head(again)[0])
    key = _key(first)
    assert (key.input_size, key.preprocessing, key.pooling) == (32, "caffe", "GlobalAveragePooling2D")


def test_a_file_rewritten_with_the_same_size_and_mtime_is_extracted_again(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.features(_key(frozen), items, _Counter(frozen))
    target = items[0].path
    stat = os.stat(target)
    Image.new("RGB", (32, 32), (7, 99, 201)).save(target, format="PNG")
    with open(target, "r+b") as handle:
        handle.truncate(stat.st_size)  # same size as before (padding after the PNG's end is ignored)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (os.stat(target).st_size, os.stat(target).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    extract = _Counter(frozen)
    values, use = cache.features(_key(frozen), items, extract)
    assert extract.total == 1 and use.from_cache == len(items) - 1
    np.testing.assert_allclose(values[0], _Counter(frozen)([items[0]])[0], rtol=1e-5, atol=1e-6)


def test_least_recently_used_sets_are_evicted_over_the_limit(image_root, tiny_vgg):
    items = _items(image_root)
    frozen_a, frozen_b = _frozen(tiny_vgg), _frozen(tiny_vgg, "block2_pool:0")
    one_set = len(items) * 8 * 4 + 128
    cache = FeatureCache(limit_bytes=int(one_set * 1.5))
    cache.features(_key(frozen_a), items, _Counter(frozen_a))
    cache.features(_key(frozen_b, "block2_pool:0"), items, _Counter(frozen_b))
    held = [s.key for s in cache.status().sets]
    assert held == [_key(frozen_b, "block2_pool:0").digest]
    assert not (cache.root / _key(frozen_a).digest).exists()
    extract = _Counter(frozen_a)
    cache.features(_key(frozen_a), items, extract)
    assert extract.total == len(items)


def test_features_larger_than_the_limit_are_used_but_not_kept(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache(limit_bytes=100)
    values, use = cache.features(_key(frozen), items, _Counter(frozen))
    assert values.shape == (len(items), 8) and not use.stored
    assert "do not fit the cache limit" in use.note
    assert cache.status().bytes == 0


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv(feature_cache.LIMIT_ENV, "5")
    assert FeatureCache().limit_bytes == 5 * 2**20
    monkeypatch.setenv(feature_cache.LIMIT_ENV, "lots")
    with pytest.raises(UserError, match="TLSTUDIO_FEATURE_CACHE_MB.*Received.*'lots'"):
        FeatureCache()


def test_a_limit_of_zero_turns_the_cache_off(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache(limit_bytes=0)
    extract = _Counter(frozen)
    cache.features(_key(frozen), items, extract)
    _, use = cache.features(_key(frozen), items, extract)
    assert extract.total == 2 * len(items) and "off" in use.note
    assert not cache.root.exists()


def test_clear_removes_everything(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    values, _ = cache.features(_key(frozen), items, _Counter(frozen))
    assert feature_cache.status().bytes > 0
    assert feature_cache.clear() >= values.nbytes
    assert feature_cache.status().entries == 0
    assert [p.name for p in cache.root.iterdir()] == [feature_cache.INDEX_FILE]
    extract = _Counter(frozen)
    cache.features(_key(frozen), items, extract)
    assert extract.total == len(items)


def test_a_damaged_index_falls_back_to_extraction_and_clear_repairs_it(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.root.mkdir(parents=True)
    (cache.root / feature_cache.INDEX_FILE).write_bytes(b"not a database" * 100)
    values, use = cache.features(_key(frozen), items, _Counter(frozen))
    assert values.shape == (len(items), 8) and use.extracted == len(items) and "could not" in use.note
    cache.clear()
    cache.features(_key(frozen), items, _Counter(frozen))
    assert cache.status().entries == len(items)


def test_a_lost_shard_is_extracted_again(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()
    cache.features(_key(frozen), items, _Counter(frozen))
    for shard in (cache.root / _key(frozen).digest).glob("*.npy"):
        shard.unlink()
    extract = _Counter(frozen)
    _, use = cache.features(_key(frozen), items, extract)
    assert extract.total == len(items) and use.from_cache == 0


def test_a_failed_write_leaves_no_partial_shard(image_root, tiny_vgg, monkeypatch):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    cache = FeatureCache()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_cache.os, "replace", fail)
    values, use = cache.features(_key(frozen), items, _Counter(frozen))
    assert values.shape == (len(items), 8) and not use.stored and "disk is full" in use.note
    monkeypatch.undo()
    assert list((cache.root / _key(frozen).digest).iterdir()) == []
    assert cache.status().entries == 0


def test_concurrent_writers_and_readers(image_root, tiny_vgg):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    expected = _Counter(frozen)(items)
    key = _key(frozen)
    lock = threading.Lock()

    def extract(subset):
        with lock:
            positions = [items.index(item) for item in subset]
        return expected[positions]

    results, errors = [], []

    def work(part):
        try:
            for _ in range(3):
                results.append((part, FeatureCache().features(key, part, extract)[0]))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    parts = [items[:20], items[10:], items]
    threads = [threading.Thread(target=work, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for part, values in results:
        np.testing.assert_array_equal(values, expected[[items.index(item) for item in part]])
    folder = FeatureCache().root / key.digest
    assert not list(folder.glob(".*.tmp"))
    assert FeatureCache().status().entries == len(items)


def _recipe(root, head: HeadSpec | None = None, **settings) -> Recipe:
    training_settings = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "early_stopping_patience": 0}
    training_settings.update(settings)
    return Recipe(
        data=DataSpec(folders=(str(root),)),
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        head=head or HeadSpec(),
        training=TrainSpec(**training_settings),
    )


def test_a_second_run_with_another_head_extracts_nothing(image_root, tmp_path, monkeypatch):
    base = make_tiny_vgg()
    extracted = []
    original = extraction.extract
    monkeypatch.setattr(
        extraction, "extract", lambda frozen, items, *args: extracted.append(len(items)) or original(frozen, items, *args)
    )
    training.train(_recipe(image_root), base_model=base, out_dir=tmp_path / "first")
    assert sum(extracted) == 36
    events = []
    result = training.train(
        _recipe(image_root, HeadSpec(hidden_units=(8,), dropout=0.2), learning_rate=3e-3),
        base_model=base, on_event=events.append, out_dir=tmp_path / "second",
    )
    assert sum(extracted) == 36, "the second run read every feature from the cache"
    assert any("36 images read from the cache, 0 extracted" in e.text for e in events if isinstance(e, Message))
    assert result.metrics["val_accuracy"] >= 0


def test_augmentation_does_not_touch_the_cache(image_root, tmp_path):
    events = []
    training.train(_recipe(image_root, augmentation=True), base_model=make_tiny_vgg(), on_event=events.append,
                   out_dir=tmp_path / "run")
    assert any("feature cache is not used" in e.text for e in events if isinstance(e, Message))
    assert feature_cache.status().entries == 0


def test_extraction_in_chunks_gives_the_same_features_and_steady_progress(image_root, tiny_vgg, monkeypatch):
    items = _items(image_root)
    frozen = _frozen(tiny_vgg)
    whole = extraction.extract(frozen, items, 32, 8)
    monkeypatch.setattr(extraction, "EXTRACT_CHUNK", 10)
    events = []
    chunked = extraction.extract(frozen, items, 32, 4, on_event=events.append)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    done = [event.done for event in events]
    assert done == sorted(done) and done[0] == 0 and done[-1] == len(items)
    assert extraction.extract(frozen, [], 32, 4).shape == (0, *whole.shape[1:])  # a worker's empty share


def test_features_of_an_empty_cache_are_the_extracted_array_itself(image_root, tiny_vgg):
    """Stored and returned without copies: memory holds the features once, whatever the data's size."""
    items = _items(image_root)
    extracted = []

    def extract(missing) -> np.ndarray:
        extracted.append(np.random.default_rng(0).normal(size=(len(missing), 5)).astype(np.float32))
        return extracted[-1]

    values, use = FeatureCache().features(_key(_frozen(tiny_vgg)), items, extract)
    assert values is extracted[0] and use.extracted == len(items) and use.stored
    again, use = FeatureCache().features(_key(_frozen(tiny_vgg)), items, extract)
    assert len(extracted) == 1 and use.from_cache == len(items)
    np.testing.assert_array_equal(again, values)
