"""Scanning never crashes, whatever the file tree holds."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tlstudio.core.data import images
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.data.scanning import MAX_DEPTH
from tlstudio.core.data.samples import make_sample_folders
from tlstudio.core.spec.errors import DataError, ImageError


@pytest.fixture
def root(tmp_path) -> Path:
    return make_sample_folders(tmp_path / "images", classes=("a", "b"), per_class=4, size=16)


def reasons(dataset) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in dataset.skipped}


def test_self_looping_and_dangling_symlinks_are_skipped(root):
    os.symlink("loop", root / "a" / "loop")
    os.symlink("loop", root / "loop")
    os.symlink("nowhere.png", root / "a" / "dangling.png")
    dataset = scan_dataset([root])
    found = reasons(dataset)
    assert found["loop"] == "symlink loop"
    assert found["dangling.png"] == "broken symlink"
    assert dataset.counts == {"a": 4, "b": 4}
    # The class folder itself, scanned as one class.
    assert scan_dataset([root / "a"]).counts == {"a": 4}


def test_a_looping_root_is_a_clear_error(tmp_path):
    os.symlink("me", tmp_path / "me")
    with pytest.raises(DataError, match="leads nowhere"):
        scan_dataset([tmp_path / "me"])


def test_symlink_into_an_unreadable_folder_is_skipped(root, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    shutil.copytree(root / "b", locked / "inner")
    os.symlink(locked / "inner", root / "a" / "linked")
    os.symlink(locked / "inner" / sorted(os.listdir(locked / "inner"))[0], root / "a" / "linked.png")
    real_stat = os.DirEntry.stat

    class Entry:
        """Stands in for os.scandir's entries: as root, chmod cannot make a folder unreadable."""

        def __init__(self, entry):
            self._entry = entry
            self.name, self.path = entry.name, entry.path

        def stat(self, follow_symlinks=True):
            if self.name.startswith("linked"):
                raise PermissionError(errno.EACCES, "Permission denied", self.path)
            return real_stat(self._entry, follow_symlinks=follow_symlinks)

        def __getattr__(self, name):
            return getattr(self._entry, name)

    real_scandir = os.scandir

    class Listing:
        def __init__(self, path):
            self._it = real_scandir(path)

        def __enter__(self):
            return (Entry(e) for e in self._it)

        def __exit__(self, *exc):
            self._it.close()

    monkeypatch.setattr(os, "scandir", Listing)
    dataset = scan_dataset([root])
    found = reasons(dataset)
    assert found["linked"] == "cannot read: permission denied (links into an unreadable folder)"
    assert found["linked.png"].startswith("cannot read: permission denied")
    assert dataset.counts == {"a": 4, "b": 4}


def test_fifo_is_never_opened_and_never_blocks(root):
    os.mkfifo(root / "a" / "pipe.png")
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(dataset=scan_dataset([root])), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "scanning blocked on a FIFO"
    assert reasons(result["dataset"])["pipe.png"] == "not a regular file (a named pipe)"


def test_a_file_replaced_by_a_fifo_after_the_scan_does_not_block_decoding(root):
    dataset = scan_dataset([root])
    path = dataset.train[0].path
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(ImageError, match="not a regular file"):
        images.load_rgb(path)


def test_files_vanishing_during_the_scan_are_skipped(root, monkeypatch):
    real_probe = images.probe_image
    victims = sorted(os.listdir(root / "a"))[:2]

    def vanish_first(path):
        if os.path.basename(str(path)) in victims and os.path.exists(path):
            os.unlink(path)
        return real_probe(path)

    monkeypatch.setattr(images, "probe_image", vanish_first)
    dataset = scan_dataset([root])
    found = reasons(dataset)
    assert all(found[name] == "cannot read: file not found" for name in victims)
    assert dataset.counts == {"a": 2, "b": 4}


def test_a_very_deep_tree_is_scanned_to_a_limit(root):
    folder = root / "a"
    for _ in range(MAX_DEPTH + 3):
        folder = folder / "d"
    folder.mkdir(parents=True)
    shutil.copy(next((root / "b").iterdir()), folder / "deep.png")
    dataset = scan_dataset([root])
    assert dataset.counts == {"a": 4, "b": 4}
    assert any(s.reason.startswith("nested too deep") for s in dataset.skipped)


NON_UTF8 = os.fsdecode(b"caf\xe9.png")


@pytest.fixture
def latin1_root(root) -> Path:
    source = next(p for p in sorted((root / "a").iterdir()))
    shutil.copy(source, os.path.join(root / "a", NON_UTF8))
    shutil.copy(source, os.path.join(root / "b", os.fsdecode(b"\xff\xfe.png")))
    return root


def test_non_utf8_names_scan_split_and_hash(latin1_root):
    dataset = scan_dataset([latin1_root])
    names = {os.path.basename(item.path) for item in (*dataset.train, *dataset.val)}
    assert NON_UTF8 in names
    assert dataset.counts == {"a": 5, "b": 5}
    # The copies are byte-identical to a sample: duplicate detection hashed them.
    assert any(os.path.join(str(latin1_root / "a"), NON_UTF8) in group for group in dataset.duplicates)
    text = json.dumps(dataset.to_summary())
    assert json.loads(text)["total_images"] == 10
    images.load_rgb(os.path.join(latin1_root / "a", NON_UTF8))


def test_non_utf8_names_through_the_data_command(latin1_root, tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for flag in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "tlstudio", "data", str(latin1_root), *flag],
            capture_output=True, env=env, timeout=300,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert b"Traceback" not in result.stderr


def test_non_utf8_names_in_the_predictions_csv(tmp_path):
    from tlstudio.cli.results import _write_predictions_csv

    class Prediction:
        path = os.path.join(str(tmp_path), NON_UTF8)
        top = (("a", 0.9),)
        error = ""

    target = tmp_path / "out.csv"
    _write_predictions_csv([Prediction()], str(target), 1)
    rows = list(csv.reader(target.open(encoding="utf-8", errors="surrogateescape", newline="")))
    assert rows[1][0] == Prediction.path


def _counting_probes(monkeypatch) -> list[str]:
    from tlstudio.core.data import scanning

    probed: list[str] = []
    original = scanning.images.probe_image

    def probe(path):
        probed.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(scanning.images, "probe_image", probe)
    monkeypatch.setattr(scanning, "_probed", type(scanning._probed)())
    return probed


def test_a_second_scan_does_not_read_unchanged_settled_files_again(root, monkeypatch):
    from tlstudio.core.data import scanning

    probed = _counting_probes(monkeypatch)
    monkeypatch.setattr(scanning, "UNSETTLED_S", 0.0)
    first = scan_dataset([root])
    assert len(probed) == 8
    second = scan_dataset([root])
    assert len(probed) == 8 and len(second.train) + len(second.val) == len(first.train) + len(first.val) == 8


def test_a_rewritten_file_is_read_again_even_with_its_old_size_and_modification_time(root, monkeypatch):
    import time

    from tlstudio.core.data import scanning

    _counting_probes(monkeypatch)
    monkeypatch.setattr(scanning, "UNSETTLED_S", 0.0)
    assert not scan_dataset([root]).skipped
    victim = sorted((root / "a").iterdir())[0]
    before = victim.stat()
    time.sleep(0.1)  # past the file system's timestamp tick
    victim.write_bytes(b"\0" * before.st_size)  # not an image any more, same size
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert victim.stat().st_mtime_ns == before.st_mtime_ns
    assert victim.name in reasons(scan_dataset([root]))


def test_files_changed_just_before_a_scan_are_read_again_next_time(root, monkeypatch):
    probed = _counting_probes(monkeypatch)
    scan_dataset([root])
    scan_dataset([root])  # the sample files were written a moment ago: their timestamps are not settled
    assert len(probed) == 16


def test_a_file_found_unusable_is_read_again_next_time(root, monkeypatch):
    """The reason may pass (a file in use, too many open files): only usable images are remembered."""
    from tlstudio.core.data import scanning

    _counting_probes(monkeypatch)
    monkeypatch.setattr(scanning, "UNSETTLED_S", 0.0)
    victim = sorted((root / "a").iterdir())[0]
    original = scanning.images.probe_image
    failures = [1]

    def busy_once(path):
        if os.path.basename(path) == victim.name and failures:
            failures.pop()
            raise ImageError(str(path), "cannot read: Too many open files")
        return original(path)

    monkeypatch.setattr(scanning.images, "probe_image", busy_once)
    assert victim.name in reasons(scan_dataset([root]))
    assert victim.name not in reasons(scan_dataset([root]))
