"""Run folders: creation, reading back, listing, and what is not a run."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.spec import paths
from tlstudio.core.train import runs
from tlstudio.core.spec.errors import ModelFileError, UserError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, save_project


def _write_run(folder, classes=("a", "b"), metrics=None, history=None):
    folder.mkdir(parents=True, exist_ok=True)
    recipe = Recipe(data=DataSpec(folders=("/data",)), base=BaseSpec(name="vgg16", weights="none", input_size=32))
    save_project(recipe, folder / runs.RECIPE_FILE)
    runs.write_json(folder / runs.CLASSES_FILE, list(classes))
    runs.write_json(folder / runs.HISTORY_FILE, history or {"loss": [1.0, 0.5]})
    runs.write_json(folder / runs.METRICS_FILE, metrics or {"val_accuracy": 0.75, "val_loss": 0.5})
    return recipe


def test_new_run_dir_is_created_under_the_runs_folder_and_unique():
    first = runs.new_run_dir()
    second = runs.new_run_dir()
    assert first.parent == paths.runs_dir()
    assert first.is_dir() and second.is_dir()
    assert first != second
    assert first.name.startswith("run-")


def test_new_run_dir_honours_a_parent(tmp_path):
    folder = runs.new_run_dir(tmp_path / "mine")
    assert folder.parent == tmp_path / "mine"
    assert list(folder.iterdir()) == []


def test_load_run_reads_every_file(tmp_path):
    recipe = _write_run(tmp_path / "r1", classes=("cats", "dogs"))
    run = runs.load_run(tmp_path / "r1")
    assert run.recipe == recipe
    assert run.classes == ("cats", "dogs")
    assert run.history == {"loss": [1.0, 0.5]}
    assert run.metrics["val_accuracy"] == 0.75
    assert run.name == "r1"
    assert runs.is_run_dir(tmp_path / "r1")


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a TL Studio run folder.*recipe.json"):
        runs.load_run(tmp_path / "plain")
    with pytest.raises(UserError, match="No run folder"):
        runs.load_run(tmp_path / "missing")


def test_load_run_reports_a_damaged_file(tmp_path):
    _write_run(tmp_path / "r")
    (tmp_path / "r" / runs.CLASSES_FILE).write_text("{oops", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        runs.load_run(tmp_path / "r")


def test_list_runs_newest_first_and_skips_incomplete_folders(tmp_path):
    import os

    _write_run(tmp_path / "old")
    _write_run(tmp_path / "new")
    os.utime(tmp_path / "old" / runs.METRICS_FILE, (1_000_000, 1_000_000))
    incomplete = tmp_path / "stopped"
    incomplete.mkdir()
    (incomplete / runs.LOG_FILE).write_text("cancelled\n", encoding="utf-8")
    listed = runs.list_runs(tmp_path)
    assert [run.name for run in listed] == ["new", "old"]
    assert runs.list_runs(tmp_path / "nothing-here") == []


def test_list_runs_defaults_to_the_runs_folder():
    _write_run(runs.new_run_dir())
    assert len(runs.list_runs()) == 1


def test_load_model_without_a_model_file_is_a_clear_error(tmp_path):
    _write_run(tmp_path / "r")
    with pytest.raises(ModelFileError, match="no model.keras"):
        runs.load_run(tmp_path / "r").load_model()


def test_write_json_is_atomic_and_readable(tmp_path):
    path = runs.write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2]}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_saved_run_reopens_as_the_result_its_training_returned(tmp_path):
    from tlstudio.core.train.run_result import run_result
    from tlstudio.core.train.training import RunResult

    _write_run(tmp_path / "r1", classes=("cats", "dogs"), metrics={"val_accuracy": 0.9, "best_epoch": 2},
               history={"loss": [1.0, 0.5, 0.4], "val_accuracy": [0.5, 0.9, 0.8]})
    result = run_result(runs.load_run(tmp_path / "r1"))
    assert isinstance(result, RunResult)
    assert result.run_dir == tmp_path / "r1"
    assert result.classes == ("cats", "dogs")
    assert result.history == {"loss": [1.0, 0.5, 0.4], "val_accuracy": [0.5, 0.9, 0.8]}
    assert result.metrics["val_accuracy"] == 0.9 and result.best_epoch == 2
    assert not result.cancelled and result.chief
