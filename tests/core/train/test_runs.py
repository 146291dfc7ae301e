"""Run folders: creation, reading back, listing, and what is not a run."""

from __future__ import annotations

import json

import pytest

from tlstudio.core.spec import atomic, paths
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


@pytest.mark.parametrize(
    "name, content, reason",
    [
        (runs.CLASSES_FILE, "{oops", "not valid JSON"),
        (runs.CLASSES_FILE, '{"a": 1}', "must be a JSON list of names"),
        (runs.METRICS_FILE, '{"val_accuracy": "high"}', "must map names to numbers"),
        (runs.HISTORY_FILE, '{"loss": 3}', "must map names to lists of numbers"),
        (runs.STATUS_FILE, '{"status": "exploded"}', "known 'status'"),
        (runs.RECIPE_FILE, "[]", ""),
    ],
)
def test_a_broken_run_folder_is_listed_as_broken_and_never_hides_the_others(tmp_path, name, content, reason):
    _write_run(tmp_path / "good")
    _write_run(tmp_path / "bad")
    (tmp_path / "bad" / name).write_text(content, encoding="utf-8")
    listing = runs.scan_runs(tmp_path)
    assert [run.name for run in listing.runs] == ["good"]
    assert [broken.name for broken in listing.broken] == ["bad"]
    assert reason in listing.broken[0].reason and "\n" not in listing.broken[0].reason
    assert [run.name for run in runs.list_runs(tmp_path)] == ["good"]


def test_undecodable_bytes_in_a_run_file_are_broken_not_a_crash(tmp_path):
    _write_run(tmp_path / "bad")
    (tmp_path / "bad" / runs.CLASSES_FILE).write_bytes(b"[\"\xff\xfe\"]")
    listing = runs.scan_runs(tmp_path)
    assert listing.runs == [] and "not UTF-8" in listing.broken[0].reason


def test_status_running_with_a_free_lock_is_interrupted_and_held_lock_is_running(tmp_path):
    _write_run(tmp_path / "r")
    runs.write_status(tmp_path / "r", runs.RUNNING)
    assert runs.load_run(tmp_path / "r").state_text == f"interrupted: {runs.KILLED_REASON}"
    lock = runs.RunLock(tmp_path / "r")
    assert lock.acquire()
    try:
        run = runs.load_run(tmp_path / "r")
        assert run.status == "running" and not run.resumable
        assert not runs.RunLock(tmp_path / "r").acquire(), "a second trainer cannot take the same run folder"
    finally:
        lock.release()
    assert runs.load_run(tmp_path / "r").status == "interrupted"


def test_an_interrupted_run_without_metrics_is_listed_and_resumable(tmp_path):
    _write_run(tmp_path / "early")
    (tmp_path / "early" / runs.METRICS_FILE).unlink()
    runs.write_status(tmp_path / "early", runs.INTERRUPTED, "MemoryError (after epoch 0)")
    run = runs.scan_runs(tmp_path).runs[0]
    assert run.resumable and run.metrics == {} and run.state_text == "interrupted: MemoryError (after epoch 0)"
    assert runs.resumable_run(tmp_path / "early").path == tmp_path / "early"
    _write_run(tmp_path / "done")
    with pytest.raises(UserError, match="is finished; only an interrupted or stopped run"):
        runs.resumable_run(tmp_path / "done")


def test_write_atomically_leaves_the_old_file_on_a_failed_write(tmp_path):
    import errno

    runs.write_json(tmp_path / "m.json", {"a": 1})

    def full_disk(stream):
        stream.write(b"{\"a\": ")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic.write_atomic_with(tmp_path / "m.json", full_disk)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_damaged_checkpoint_is_a_clear_error_and_never_unpickled(tmp_path):
    import numpy as np

    from tlstudio.core.train import checkpoint

    (tmp_path / runs.CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="checkpoint .* cannot be read.*cannot be resumed"):
        checkpoint.load(tmp_path)
    np.savez(tmp_path / runs.CHECKPOINT_FILE, state=np.array([object()], dtype=object))
    with pytest.raises(UserError, match="cannot be read"):
        checkpoint.load(tmp_path)
    assert checkpoint.load(tmp_path / "nothing-here") is None


def test_a_run_model_with_a_lambda_layer_is_refused_before_keras_reads_it(tmp_path, monkeypatch):
    """A run folder shared by someone else is data: code hidden in its model never runs."""
    import keras

    from tlstudio.core.use import predict

    _write_run(tmp_path / "r")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Lambda(lambda t: t * 2)(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "r" / runs.MODEL_FILE)
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: pytest.fail("the file was deserialised"))
    with pytest.raises(ModelFileError, match="refused for safety.*Lambda"):
        runs.load_run(tmp_path / "r").load_model()
    with pytest.raises(ModelFileError, match="refused for safety.*Lambda"):
        predict.load_predictor(tmp_path / "r" / runs.MODEL_FILE)
