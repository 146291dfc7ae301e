"""Property-based: any file tree scans without crashing, and the report is consistent."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import DataError

NAMES = st.sampled_from(["a", "b", "c", "train", "val", "test", ".hidden", "__MACOSX", "x.png", "y.jpg",
                         os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff.png"), "Thumbs.db"])
KINDS = st.sampled_from(["folder", "image", "junk", "empty", "link", "fifo", "corrupt"])
ENTRIES = st.lists(st.tuples(st.lists(st.integers(0, 7), max_size=3), NAMES, KINDS, st.integers(0, 40)),
                   max_size=25)


def _png(path: str, seed: int) -> None:
    Image.new("RGB", (8, 8), (seed * 5 % 256, 40, 90)).save(path, format="PNG")


def build(root: str, entries) -> None:
    folders = [root]
    for parents, name, kind, seed in entries:
        parent = folders[parents[0] % len(folders)] if parents else root
        path = os.path.join(parent, name)
        if os.path.lexists(path):
            continue
        if kind == "folder":
            os.mkdir(path)
            folders.append(path)
        elif kind == "image":
            _png(path, seed)
        elif kind == "corrupt":
            _png(path, seed)
            with open(path, "r+b") as handle:
                handle.truncate(30)
        elif kind == "junk":
            with open(path, "wb") as handle:
                handle.write(os.urandom(seed + 1))
        elif kind == "empty":
            open(path, "wb").close()
        elif kind == "fifo":
            os.mkfifo(path)
        else:  # a symlink: to a folder above (a loop), to itself, or to nothing
            target = [folders[seed % len(folders)], path, os.path.join(root, "missing")][seed % 3]
            os.symlink(target, path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES, st.floats(0.05, 0.95))
def test_any_tree_scans_and_the_report_is_consistent(entries, val_fraction):
    root = tempfile.mkdtemp(prefix="tlstudio-scan-")
    try:
        build(root, entries)
        try:
            dataset = scan_dataset([root], val_fraction=val_fraction)
        except DataError as error:
            assert str(error)
            return
        used = [item.path for item in (*dataset.train, *dataset.val, *dataset.test)]
        skipped = {entry.path for entry in dataset.skipped}
        assert len(used) == len(set(used))
        assert not set(used) & skipped
        assert all(os.path.isfile(path) for path in used)
        assert all(0 <= item.label < len(dataset.classes) for item in (*dataset.train, *dataset.val))
        summary = json.loads(json.dumps(dataset.to_summary()))
        assert summary["total_images"] == len(used)
    finally:
        shutil.rmtree(root, ignore_errors=True)
