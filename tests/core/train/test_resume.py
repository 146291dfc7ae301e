"""Finished epochs survive: errors and kills leave an interrupted run, and resuming it ends as an uninterrupted run.

The tolerance is 1e-4 on every history value and final metric: a resumed run
restores weights, optimizer state and the shuffle order, so on the CPU it
repeats the uninterrupted run's arithmetic.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import TrainingError, UserError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.core.train import callbacks, model_writer, runs, training

TOLERANCE = 1e-4


def _recipe(root, model_file, **training_settings) -> Recipe:
    settings = {"epochs": 4, "batch_size": 8, "learning_rate": 1e-2, "early_stopping_patience": 0}
    settings.update(training_settings)
    return Recipe(
        data=DataSpec(folders=(str(root),)),
        base=BaseSpec(name="file", model_file=str(model_file)),
        head=HeadSpec(hidden_units=(6,)),
        training=TrainSpec(**settings),
    )


def _same_run(resumed: training.RunResult, reference: training.RunResult) -> None:
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(resumed.history[key], reference.history[key], atol=TOLERANCE, err_msg=key)
    for key in ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "best_epoch", "epochs", "head_epochs"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], abs=TOLERANCE), key
    assert resumed.best_epoch == reference.best_epoch


@pytest.fixture
def reference(image_root, tiny_vgg_file, tmp_path):
    """The uninterrupted run: 3 head epochs then 2 fine-tune epochs."""
    recipe = _recipe(image_root, tiny_vgg_file, epochs=3, fine_tune_epochs=2, fine_tune_layers=2)
    return recipe, training.train(recipe, out_dir=tmp_path / "reference")


@pytest.mark.parametrize("fail_after", [2, 4])
def test_an_error_after_epochs_leaves_an_interrupted_run_that_resumes(reference, tmp_path, monkeypatch, fail_after):
    """An out-of-memory error in the head phase (epoch 2) or in fine-tuning (epoch 4)."""
    recipe, expected = reference
    original = callbacks.Checkpointing.on_epoch_end
    folder = tmp_path / "run"

    def failing(self, index, logs=None):
        original(self, index, logs)
        if len(json.loads((folder / runs.HISTORY_FILE).read_text())["loss"]) == fail_after:
            raise TrainingError("Training stopped: the device ran out of memory with batch size 8.")

    monkeypatch.setattr(callbacks.Checkpointing, "on_epoch_end", failing)
    events = []
    with pytest.raises(TrainingError):
        training.train(recipe, out_dir=folder, on_event=events.append)
    monkeypatch.undo()
    assert any("ended early" in e.text and f"--resume {folder}" in e.text for e in events if hasattr(e, "text"))

    run = runs.load_run(folder)
    assert run.status == "interrupted" and run.resumable
    assert run.state_text.startswith("interrupted: Training stopped: the device ran out of memory")
    assert len(run.history["loss"]) == fail_after
    assert run.metrics["epochs"] == fail_after
    probabilities = run.load_model().predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    listed = {r.path: r.state_text for r in runs.list_runs(tmp_path)}
    assert listed[folder] == run.state_text
    if fail_after == 2:  # the interrupted run's best model is a model like any other
        from tlstudio.core.use.export import export_run
        from tlstudio.core.use.predict import load_predictor

        report = export_run(folder, tmp_path / "export", formats=("keras",))
        assert all(check.passed for check in report.checks)
        assert load_predictor(folder) is not None

    resumed = training.resume(folder)
    _same_run(resumed, expected)
    after = runs.load_run(folder)
    assert after.status == "finished" and not (folder / runs.CHECKPOINT_FILE).exists()
    assert "Resuming run" in (folder / runs.LOG_FILE).read_text()


def test_a_finished_run_cannot_be_resumed(reference):
    _, expected = reference
    with pytest.raises(UserError, match="finished; only an interrupted or stopped run can be resumed"):
        training.resume(expected.run_dir)


def test_a_stopped_run_can_be_resumed(reference, tmp_path):
    recipe, expected = reference
    epochs = []
    stopped = training.train(
        recipe, out_dir=tmp_path / "run", on_event=lambda e: epochs.append(e) if type(e).__name__ == "EpochEnded" else None,
        should_stop=lambda: len(epochs) >= 1,
    )
    assert stopped.cancelled
    run = runs.load_run(stopped.run_dir)
    assert run.status == "stopped" and run.resumable
    _same_run(training.resume(stopped.run_dir), expected)


_KILLED_SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    from tlstudio.core.spec.recipe import load_project
    from tlstudio.core.train import training

    ended = 0

    def report(event):
        global ended
        if type(event).__name__ == "EpochEnded":
            print("epoch", flush=True)
            ended += 1
            while ended >= int(sys.argv[4]):  # waits here to be killed: the run never ends on its own
                time.sleep(1)

    if sys.argv[1] == "train":
        training.train(load_project(sys.argv[2]), out_dir=sys.argv[3], on_event=report)
    else:
        training.resume(sys.argv[3], on_event=report)
    """
)


def _train_and_kill(script, mode: str, project, folder, epochs_before_kill: int, delay: float) -> None:
    """Run training in a child process and SIGKILL it ``delay`` seconds after its ``epochs_before_kill``-th epoch.

    The child stops after one more epoch, so the kill lands in that epoch or just after it, however
    slow or fast the machine is, and never after the run's end.
    """
    child = subprocess.Popen(
        [sys.executable, str(script), mode, str(project), str(folder), str(epochs_before_kill + 1)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ),
    )
    try:
        seen = 0
        while seen < epochs_before_kill:
            line = child.stdout.readline()
            assert line, "the child process ended before the epoch at which it was to be killed"
            seen += line.strip() == "epoch"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=120)


def test_killed_twice_at_random_points_then_resumed(reference, tmp_path):
    """SIGKILL during training, then during the resumed run; the last resume ends as the uninterrupted run."""
    recipe, expected = reference
    from tlstudio.core.spec.recipe import save_project

    project = save_project(recipe, tmp_path / "project.json")
    script = tmp_path / "child.py"
    script.write_text(_KILLED_SCRIPT)
    folder = tmp_path / "run"
    chance = random.Random()
    _train_and_kill(script, "train", project, folder, chance.randint(1, 2), chance.uniform(0.0, 0.4))
    first = runs.load_run(folder)
    assert first.status == "interrupted" and first.reason == runs.KILLED_REASON
    assert first.state_text == f"interrupted: {runs.KILLED_REASON}"
    if first.metrics:
        assert first.load_model() is not None
    _train_and_kill(script, "resume", project, folder, 1, chance.uniform(0.0, 0.4))
    assert runs.load_run(folder).status == "interrupted"
    _same_run(training.resume(folder), expected)
    assert not list(folder.glob(".*.tmp")), "a resumed run clears the half-written files of the killed one"


def test_an_error_before_the_first_epoch_removes_only_what_the_run_wrote(image_root, tiny_vgg_file, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(callbacks.EpochRecord, "on_epoch_end", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MemoryError):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and not list((tmp_path / "empty").iterdir())


def test_a_full_disk_at_an_epoch_end_is_a_clear_error_and_keeps_the_run(image_root, tiny_vgg_file, tmp_path,
                                                                          monkeypatch):
    import errno

    from tlstudio.core.train import checkpoint

    original = checkpoint.save
    calls = []

    def full_on_second(folder, point):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(folder, point)

    monkeypatch.setattr(checkpoint, "save", full_on_second)
    with pytest.raises(TrainingError, match=r"cannot save epoch 2 .*No space left on device.*--resume"):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=tmp_path / "run")
    run = runs.load_run(tmp_path / "run")
    assert run.status == "interrupted" and "No space left" in run.reason
    assert run.load_model() is not None


def test_out_folder_rules(image_root, tiny_vgg_file, tmp_path, reference):
    _, finished = reference
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "thesis.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and is not a TL Studio run.*Choose a new or empty folder"):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=tmp_path / "documents")
    assert (tmp_path / "documents" / "thesis.txt").read_text() == "mine"
    with pytest.raises(UserError, match="already holds a TL Studio run.*--resume"):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=finished.run_dir)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        training.train(_recipe(image_root, tiny_vgg_file), out_dir=tmp_path / "afile")


def _corrupt_png_data(path) -> None:
    """Keep the PNG signature and header chunk, garble the compressed pixel data."""
    data = bytearray(open(path, "rb").read())
    start = data.index(b"IDAT") + 4
    data[start + 2 : start + 40] = bytes(range(38))
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("augmentation", [False, True], ids=["features", "live images"])
def test_an_undecodable_image_is_skipped_named_and_counted(image_root, tiny_vgg_file, tmp_path, augmentation):
    dataset = scan_dataset([image_root])
    broken = [dataset.train[3].path, dataset.val[0].path]
    for path in broken:
        _corrupt_png_data(path)
    events = []
    result = training.train(_recipe(image_root, tiny_vgg_file, epochs=2, augmentation=augmentation),
                            dataset=dataset, on_event=events.append, out_dir=tmp_path / "run")
    assert sorted(path for path, _ in result.skipped) == sorted(broken)
    assert result.metrics["skipped_images"] == 2
    warnings = [e.text for e in events if type(e).__name__ == "Message" and e.level == "warning"]
    assert all(any(path in text for text in warnings) for path in broken)
    assert sorted(p for p, _ in json.loads((result.run_dir / runs.SKIPPED_FILE).read_text())) == sorted(broken)
    assert broken[0] in (result.run_dir / runs.LOG_FILE).read_text()
    assert len(result.history["loss"]) == 2


def test_training_stops_when_a_class_loses_its_images(image_root, tiny_vgg_file, tmp_path):
    dataset = scan_dataset([image_root])
    squares = dataset.classes.index("squares")
    for item in (*dataset.train, *dataset.val):
        if item.label == squares:
            _corrupt_png_data(item.path)
    from tlstudio.core.spec.errors import DataError

    with pytest.raises(DataError, match=r"cannot be read.*'squares'"):
        training.train(_recipe(image_root, tiny_vgg_file), dataset=dataset, out_dir=tmp_path / "run")


@pytest.mark.parametrize("interval", [0.0, 3600.0])
def test_the_best_model_is_saved_at_most_every_interval_and_metrics_describe_it(
    image_root, tiny_vgg_file, tmp_path, monkeypatch, interval
):
    """Saving a big classifier every better epoch costs more than a head epoch: it is saved at most every
    ``MODEL_SAVE_INTERVAL_S``, and an interrupted run's metrics are those of the model in its folder."""
    monkeypatch.setattr(training, "MODEL_SAVE_INTERVAL_S", interval)
    saved = []  # each model write, as the number of epochs done (the epoch's history is written first)
    original_write = model_writer.ModelWriter.write
    folder = tmp_path / "run"

    def write(writer, metrics, in_background=False):
        saved.append(len(json.loads((folder / runs.HISTORY_FILE).read_text())["loss"]))
        return original_write(writer, metrics, in_background)

    monkeypatch.setattr(model_writer.ModelWriter, "write", write)
    original = callbacks.Checkpointing.on_epoch_end

    fail_at = [4]

    def failing(self, index, logs=None):
        original(self, index, logs)
        if len(json.loads((folder / runs.HISTORY_FILE).read_text())["loss"]) == fail_at[0]:
            raise TrainingError("Training stopped: the device ran out of memory with batch size 8.")

    monkeypatch.setattr(callbacks.Checkpointing, "on_epoch_end", failing)
    with pytest.raises(TrainingError):
        training.train(_recipe(image_root, tiny_vgg_file, epochs=6, learning_rate=1e-3), out_dir=folder)
    run = runs.load_run(folder)
    losses = run.history["val_loss"][:4]
    best_epochs = [i + 1 for i, loss in enumerate(losses) if loss <= min(losses[: i + 1])]
    if interval == 0.0:  # every better epoch is saved
        assert saved == best_epochs
    else:  # the first at once, then the best when the error ended the run
        assert saved[0] == 1 and len(saved) == (1 if best_epochs[-1] == 1 else 2)
    assert run.metrics["best_epoch"] == best_epochs[-1]
    assert run.metrics["epochs"] == 4
    assert run.metrics["val_loss"] == pytest.approx(run.history["val_loss"][int(run.metrics["best_epoch"]) - 1])
    fail_at[0] = 5
    with pytest.raises(TrainingError):
        training.resume(folder)
    run = runs.load_run(folder)  # the resumed run's metrics also describe the model in the folder
    losses = run.history["val_loss"][:5]
    assert run.metrics["epochs"] == 5 and run.metrics["best_epoch"] == losses.index(min(losses)) + 1
    assert run.metrics["val_loss"] == pytest.approx(min(losses))
    fail_at[0] = 0
    assert training.resume(folder).metrics["epochs"] == 6
