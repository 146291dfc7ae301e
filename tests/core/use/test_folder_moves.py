"""Apply to folders: corrections become file moves, nothing is overwritten, and the undo log restores them."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.data.dataset import scan_data_spec, scan_dataset
from tlstudio.core.spec.errors import DataError
from tlstudio.core.spec.recipe import DataSpec
from tlstudio.core.use.folder_moves import apply_to_folders, undo_moves


def test_apply_moves_files_and_undo_restores_them(image_root, tmp_path):
    circles = sorted((image_root / "circles").iterdir())
    clash = image_root / "squares" / circles[1].name
    clash.write_bytes((image_root / "squares" / "squares_000.png").read_bytes())
    spec = DataSpec(folders=(str(image_root),), excluded_files=(str(circles[0]),),
                    relabels=((str(circles[1]), "squares"),))
    before = {p: p.read_bytes() for p in image_root.rglob("*.png")}
    remaining, log = apply_to_folders(scan_dataset([image_root]), spec, tmp_path / "excluded")
    assert remaining.excluded_files == () and remaining.relabels == ()
    assert not circles[0].exists() and (tmp_path / "excluded" / circles[0].name).exists()
    assert clash.read_bytes() == before[clash]
    moved = image_root / "squares" / f"{circles[1].stem}-1.png"
    assert moved.read_bytes() == before[circles[1]]
    assert scan_data_spec(remaining).counts == scan_data_spec(spec).counts
    assert len(json.loads(log.read_text())["moves"]) == 2

    assert undo_moves(log) == 2
    assert {p: p.read_bytes() for p in image_root.rglob("*.png")} == before


def test_an_excluded_folder_inside_the_data_is_refused(image_root):
    spec = DataSpec(folders=(str(image_root),), excluded_files=(str(next((image_root / "circles").iterdir())),))
    with pytest.raises(DataError, match="outside the data folders"):
        apply_to_folders(scan_dataset([image_root]), spec, image_root / "excluded")


def test_undo_of_an_interrupted_apply_moves_back_only_what_moved(image_root, tmp_path):
    first, second = sorted((image_root / "circles").iterdir())[:2]
    log = tmp_path / "log.json"
    log.write_text(json.dumps({"tlstudio_moves": 1, "moves": [
        {"from": str(first), "to": str(tmp_path / first.name)},
        {"from": str(second), "to": str(tmp_path / second.name)}]}))
    first.rename(tmp_path / first.name)
    assert undo_moves(log) == 1 and first.exists() and second.exists()


def test_a_corrupt_log_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="undo log"):
        undo_moves(bad)
