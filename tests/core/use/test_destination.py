"""The export-folder rule: only an empty folder or an earlier export may be replaced."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.spec.errors import ExportError
from tlstudio.core.use.destination import check_destination


def earlier_export(folder, artifacts=("model.keras",)):
    folder.mkdir()
    (folder / "model_card.json").write_text(json.dumps(
        {"tlstudio_model_card": 1, "artifacts": {f"f{i}": name for i, name in enumerate(artifacts)}}))
    (folder / "labels.txt").write_text("a\nb\n")
    for name in artifacts:
        (folder / name).write_text("x")
    return folder


def test_missing_and_empty_folders_are_fine(tmp_path):
    check_destination(tmp_path / "new", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", overwrite=False)


def test_earlier_export_needs_overwrite(tmp_path):
    folder = earlier_export(tmp_path / "out")
    with pytest.raises(ExportError, match="already exists"):
        check_destination(folder, overwrite=False)
    check_destination(folder, overwrite=True)


@pytest.mark.parametrize("card", [
    "not json",
    json.dumps({"artifacts": {"keras": "model.keras"}}),
    json.dumps({"tlstudio_model_card": 1, "artifacts": {"keras": "../.."}}),
    json.dumps([1, 2]),
])
def test_a_folder_without_a_real_model_card_is_refused(tmp_path, card):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "model_card.json").write_text(card)
    (folder / "model.keras").write_text("x")
    with pytest.raises(ExportError, match="not an earlier TL Studio export"):
        check_destination(folder, overwrite=True)


def test_a_file_and_a_symlink_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_destination(tmp_path / "file", overwrite=True)
    earlier_export(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ExportError, match="not a folder"):
        check_destination(tmp_path / "link", overwrite=True)


def test_home_cwd_and_protected_folders_and_their_parents_are_refused(tmp_path, monkeypatch):
    home = earlier_export(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ExportError, match="must not be replaced"):
        check_destination(home, overwrite=True)
    work = earlier_export(tmp_path / "work")
    monkeypatch.chdir(work)
    with pytest.raises(ExportError, match="must not be replaced"):
        check_destination(work, overwrite=True)
    run = earlier_export(tmp_path / "runs")
    with pytest.raises(ExportError, match="must not be replaced"):
        check_destination(run, overwrite=True, protected=[run / "inner"])

