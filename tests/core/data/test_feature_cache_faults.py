"""The feature cache under faults: full and read-only disks, tampered indexes, odd names.

These tests need no model: a fake extract function returns one row per image,
so they run in a moment and inject the fault itself (a real tmpfs filled up,
an OSError(ENOSPC), a forged index row).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tlstudio.core.data import feature_cache
from tlstudio.core.data.feature_cache import FeatureCache, FeatureSetKey

KEY = FeatureSetKey("tiny", "block3_pool:0", 32, "caffe", "GlobalAveragePooling2D", "w" * 32, "s" * 32)
OTHER = FeatureSetKey("tiny", "block2_pool:0", 32, "caffe", "GlobalAveragePooling2D", "w" * 32, "s" * 32)


@dataclass(frozen=True)
class Item:
    path: str


class Extract:
    def __init__(self, width: int = 64) -> None:
        self.width = width
        self.count = 0

    def __call__(self, items):
        self.count += len(items)
        return np.stack([np.full(self.width, len(os.fsencode(item.path)), np.float32) for item in items])


@pytest.fixture
def files(tmp_path) -> list[Item]:
    folder = tmp_path / "images"
    folder.mkdir()
    items = []
    for index in range(20):
        path = folder / f"{index:03d}.png"
        path.write_bytes(f"image {index}".encode())
        items.append(Item(str(path)))
    return items


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".sqlite"
                  and not p.name.startswith(feature_cache.INDEX_FILE))


def test_shards_are_never_written_through_a_memory_map(files, tmp_path, monkeypatch):
    real_open_memmap = np.lib.format.open_memmap

    def read_only_memmap(file, mode="r+", *args, **kwargs):
        assert mode == "r", f"memory-mapped write (mode {mode!r})"
        return real_open_memmap(file, mode, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", read_only_memmap)
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    values, use = cache.features(KEY, files, Extract())
    assert use.stored, use.note
    again, use = cache.features(KEY, files, Extract())
    assert use.from_cache == len(files)
    np.testing.assert_array_equal(values, again)


def test_injected_full_disk_falls_back_and_leaves_nothing(files, tmp_path, monkeypatch):
    from tlstudio.core.spec import atomic

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    values, use = cache.features(KEY, files, Extract())
    assert values.shape == (len(files), 64) and not use.stored
    assert "(the disk is full); going on without the cache" in use.note
    monkeypatch.undo()
    assert leftovers(cache.root) == []
    assert cache.status().entries == 0


def test_real_full_disk_falls_back_and_leaves_nothing(files, small_tmpfs):
    cache = FeatureCache(small_tmpfs / "cache", limit_bytes=2**30)
    extract = Extract(width=20_000)  # 20 images x 80 KB: more than the 1 MiB disk
    values, use = cache.features(KEY, files, extract)
    assert values.shape == (len(files), 20_000) and extract.count == len(files)
    assert not use.stored and "going on without the cache" in use.note
    assert leftovers(cache.root) == []
    small = Extract(width=4)
    _, use = cache.features(OTHER, files[:2], small)
    assert use.stored, use.note  # the cache still works for what fits


def test_read_only_cache_falls_back(files, tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "cache")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    values, use = cache.features(KEY, files, Extract())
    assert values.shape == (len(files), 64) and not use.stored
    assert "could not be read" in use.note and "read-only" in use.note
    assert not (tmp_path / "cache").exists()


def test_a_tampered_index_cannot_delete_outside_the_cache(files, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("mine")
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    cache.features(KEY, files, Extract())
    with sqlite3.connect(cache.root / feature_cache.INDEX_FILE) as db:
        for index, key in enumerate(("../precious", str(precious))):
            db.execute("INSERT INTO sets VALUES (?, 'x', '[64]', 0)", (key,))
            db.execute("INSERT INTO shards VALUES (?, ?, 1, 999999999)", (f"../../precious/{index}", key))
            db.execute("INSERT INTO rows VALUES (?, 'c', '../../precious/thesis.txt', 0)", (key,))
    small = FeatureCache(cache.root, limit_bytes=30_000)
    small.features(OTHER, files, Extract(width=8))
    small.clear()
    assert (precious / "thesis.txt").read_text() == "mine"


def test_a_forged_shard_name_is_never_opened(files, tmp_path):
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((20, 64), np.float32))
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    cache.features(KEY, files, Extract())
    with sqlite3.connect(cache.root / feature_cache.INDEX_FILE) as db:
        db.execute("UPDATE rows SET shard = ?", (str(outside),))
    extract = Extract()
    values, use = cache.features(KEY, files, extract)
    assert extract.count == len(files) and values[0, 0] == len(os.fsencode(files[0].path))


def test_non_utf8_file_names_are_cached(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    items = []
    for index, raw in enumerate((b"caf\xe9.png", b"\xff\xfe.png")):
        path = os.path.join(str(folder), os.fsdecode(raw))
        with open(path, "wb") as handle:
            handle.write(b"content %d" % index)
        items.append(Item(path))
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    _, use = cache.features(KEY, items, Extract())
    assert use.stored, use.note
    _, use = cache.features(KEY, items, Extract())
    assert use.from_cache == 2


def test_a_vanished_file_is_extracted_not_cached(files, tmp_path):
    cache = FeatureCache(tmp_path / "cache", limit_bytes=2**30)
    cache.features(KEY, files, Extract())
    os.unlink(files[3].path)
    seen = []

    def extract(items):
        seen.extend(items)
        return Extract()(items)

    values, use = cache.features(KEY, files, extract)
    assert seen == [files[3]] and use.from_cache == len(files) - 1
