"""Feature batches for the head: every row once per epoch, a new order each epoch, no copy of the whole."""

from __future__ import annotations

import numpy as np
import pytest

from tlstudio.core.train.feature_stream import batch_indices, feature_batches


def test_batch_indices_cover_every_row_once_in_a_new_order_each_pass():
    rng = np.random.default_rng(0)
    passes = [np.concatenate(list(batch_indices(103, 10, rng))) for _ in range(2)]
    for order in passes:
        assert sorted(order.tolist()) == list(range(103))
    assert passes[0].tolist() != passes[1].tolist()
    assert np.concatenate(list(batch_indices(7, 3, None))).tolist() == list(range(7))


def test_feature_batches_read_from_a_memory_mapped_array(tmp_path):
    features = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(50, 4))
    features[:] = np.arange(200, dtype=np.float32).reshape(50, 4)
    features.flush()
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    labels = (np.arange(50) % 3).astype(np.int32)
    epochs = []
    dataset = feature_batches(mapped, labels, 16, seed=1)
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in dataset]
        assert [len(y) for _, y in batches] == [16, 16, 16, 2]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        assert np.array_equal(y, (x[:, 0] // 4 % 3).astype(np.int32))  # each row keeps its label
        epochs.append(x[:, 0].tolist())
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    in_order = np.concatenate([x.numpy() for x, _ in feature_batches(mapped, labels, 16)])
    assert np.array_equal(in_order, np.asarray(mapped))


def test_feature_batches_refuse_mismatched_labels():
    with pytest.raises(ValueError, match="differ in length"):
        feature_batches(np.zeros((3, 2), np.float32), np.zeros(4, np.int32), 2)
