"""The tf.data input pipeline: shapes, order, shuffling, augmentation, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tlstudio.core.data import pipeline
from tlstudio.core.data.dataset import ImageItem, scan_dataset
from tlstudio.core.spec.errors import ImageError
from tlstudio.core.data.images import load_rgb


@pytest.fixture
def items(image_root):
    dataset = scan_dataset([image_root])
    return dataset.train


def _collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_batches_hold_float_pixels_and_int_labels(items):
    batches = pipeline.image_batches(items, 3, 32, 8, shuffle=False)
    x, y = next(iter(batches))
    assert x.shape == (8, 32, 32, 3) and x.dtype.name == "float32"
    assert y.dtype.name == "int32"
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255.0
    assert batches.element_spec[0].shape.as_list() == [None, 32, 32, 3]


def test_unshuffled_order_is_the_items_order_every_time(items):
    batches = pipeline.image_batches(items, 3, 32, 7, shuffle=False)
    first_x, first_y = _collect(batches)
    second_x, _ = _collect(batches)
    expected = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    np.testing.assert_array_equal(first_x, expected)
    np.testing.assert_array_equal(first_x, second_x)
    assert first_y.tolist() == [item.label for item in items]


def test_shuffle_reorders_each_epoch_but_keeps_every_image(items):
    batches = pipeline.image_batches(items, 3, 32, 8, shuffle=True, seed=3)
    _, epoch1 = _collect(batches)
    x2, epoch2 = _collect(batches)
    assert sorted(epoch1.tolist()) == sorted(item.label for item in items)
    assert len(x2) == len(items)
    reference = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    order1 = [int(np.argmin(((reference - image) ** 2).sum(axis=(1, 2, 3)))) for image in x2]
    assert sorted(order1) == list(range(len(items)))
    assert order1 != list(range(len(items)))


def test_augmentation_changes_pixels_within_range(items):
    plain, _ = _collect(pipeline.image_batches(items, 3, 32, 8, shuffle=False))
    augmented, labels = _collect(pipeline.image_batches(items, 3, 32, 8, shuffle=False, augment=True))
    assert augmented.shape == plain.shape
    assert labels.tolist() == [item.label for item in items]
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, plain)


def test_an_unreadable_image_is_reported_by_name(items, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(items[0].path, "rb").read()[:100])
    mixed = [items[0], ImageItem(str(broken), 1, 100), items[1]]
    batches = pipeline.image_batches(mixed, 3, 32, 2, shuffle=False)
    with pytest.raises(ImageError) as caught:
        with pipeline.image_errors_surfaced():
            _collect(batches)
    assert caught.value.path == str(broken)
    assert "corrupt" in caught.value.reason or "truncated" in caught.value.reason


def test_load_images_decodes_in_order(items):
    paths = [item.path for item in items[:5]]
    images = pipeline.load_images(paths, 32)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images[3], load_rgb(paths[3], 32).astype(np.float32))
    assert pipeline.load_images([], 32).shape == (0, 32, 32, 3)


def test_load_images_names_a_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nothing-here.png"):
        pipeline.load_images([str(tmp_path / "nothing-here.png")], 32)


def test_labels_out_of_range_are_refused(items):
    with pytest.raises(ValueError, match="Labels must lie in 0..1"):
        pipeline.image_batches(items, 2, 32, 8, shuffle=False)


def test_feature_batches_shuffle_as_the_rows_would_be_shuffled_each_epoch():
    import tensorflow as tf

    features = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    labels = np.arange(50, dtype=np.int32) % 3
    batches = pipeline.feature_batches(features, labels, 8, shuffle_seed=7)
    rows_shuffled = tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(
        50, seed=7, reshuffle_each_iteration=True).batch(8)
    epochs = []
    for _ in range(2):
        ours = [(x.numpy(), y.numpy()) for x, y in batches]
        expected = [(x.numpy(), y.numpy()) for x, y in rows_shuffled]
        assert [len(y) for _, y in ours] == [8] * 6 + [2]
        for (x, y), (want_x, want_y) in zip(ours, expected, strict=True):
            np.testing.assert_array_equal(x, want_x)
            np.testing.assert_array_equal(y, want_y)
        epochs.append(np.concatenate([x[:, 0] for x, _ in ours]))
    assert not np.array_equal(epochs[0], epochs[1])
    assert sorted(epochs[0].tolist()) == sorted(features[:, 0].tolist())


def test_unshuffled_feature_batches_keep_the_rows_in_order():
    features = np.arange(20, dtype=np.float32).reshape(10, 2)
    labels = np.arange(10, dtype=np.int32)
    batches = list(pipeline.feature_batches(features, labels, 4))
    assert batches[0][0].shape == (4, 2) and batches[-1][0].shape == (2, 2)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches]), features)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches]), labels)
