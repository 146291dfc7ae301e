"""The run's best model written in the background while the head trains: the same file, its metrics beside
it, and its errors surfacing in the run."""

from __future__ import annotations

import errno
import json
import threading
import zipfile

import numpy as np
import pytest

from tlstudio.core.model import classifier, tensors
from tlstudio.core.spec.errors import TrainingError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.core.train import model_writer, runs, training
from tlstudio.core.train.batch_norm import split_head

METRICS = {"val_accuracy": 0.5, "val_loss": 1.0, "train_accuracy": 0.5, "train_loss": 1.0, "best_epoch": 1.0}


@pytest.fixture
def trained(tiny_vgg):
    model = classifier.build_classifier(tiny_vgg, tensors.default_cut_tensor(tiny_vgg), 3,
                                        HeadSpec(hidden_units=(6,)), "caffe")
    frozen, head = split_head(model)
    return model, frozen, head


def _config(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def test_a_background_write_is_the_model_as_it_was_and_its_metrics(trained, tmp_path):
    import keras

    model, frozen, head = trained
    images = np.random.default_rng(0).uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    expected = model.predict(images, verbose=0)
    writer = model_writer.ModelWriter(tmp_path, model, frozen, head, None)
    writer.write(METRICS, in_background=True)
    for layer in head:  # training goes on: the head changes while the file is written
        layer.set_weights([w + 1.0 for w in layer.get_weights()])
    writer.wait()
    assert writer.saved == METRICS
    assert json.loads((tmp_path / runs.METRICS_FILE).read_text()) == METRICS
    written = keras.saving.load_model(tmp_path / runs.MODEL_FILE)
    np.testing.assert_allclose(written.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    (tmp_path / "direct").mkdir()
    model.save(tmp_path / "direct" / "model.keras")
    assert _config(tmp_path / runs.MODEL_FILE) == _config(tmp_path / "direct" / "model.keras")


def test_a_model_and_its_metrics_appear_together_never_with_an_epochs_record_between(trained, tmp_path,
                                                                                    monkeypatch):
    model, frozen, head = trained
    writer = model_writer.ModelWriter(tmp_path, model, frozen, head, None)
    written, go_on = threading.Event(), threading.Event()
    original = runs.save_model_atomically

    def paused_before_the_rename(saved_model, path, publish=None):
        def publish_later(rename):
            written.set()
            go_on.wait(10)
            publish(rename)

        return original(saved_model, path, publish_later)

    monkeypatch.setattr(runs, "save_model_atomically", paused_before_the_rename)
    recorded = []
    writer.write(METRICS, in_background=True)
    assert written.wait(10)
    writer.record_epoch({"epochs": 2.0}, recorded.append)  # written under its temporary name only
    assert recorded == [None] and not (tmp_path / runs.MODEL_FILE).exists()
    go_on.set()
    writer.wait()
    assert (tmp_path / runs.MODEL_FILE).exists()
    assert json.loads((tmp_path / runs.METRICS_FILE).read_text()) == {**METRICS, "epochs": 2.0}
    writer.record_epoch({"epochs": 3.0}, recorded.append)
    assert recorded[1] == {**METRICS, "epochs": 3.0}


def test_a_failed_background_write_is_raised_by_the_next_call(trained, tmp_path, monkeypatch):
    model, frozen, head = trained

    def full(saved_model, path, publish=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "save_model_atomically", full)
    writer = model_writer.ModelWriter(tmp_path, model, frozen, head, None)
    writer.write(METRICS, in_background=True)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    assert writer.saved is None and not (tmp_path / runs.METRICS_FILE).exists()
    writer.write(METRICS, in_background=True)
    writer.wait_quietly()
    writer.wait()  # said once


def test_any_error_of_a_background_write_reaches_the_training_thread(trained, tmp_path, monkeypatch):
    model, frozen, head = trained

    def broken(saved_model, path, publish=None):
        raise ValueError("cannot serialise layer 'head_dense_1'")

    monkeypatch.setattr(runs, "save_model_atomically", broken)
    writer = model_writer.ModelWriter(tmp_path, model, frozen, head, None)
    writer.write(METRICS, in_background=True)
    with pytest.raises(ValueError, match="cannot serialise"):
        writer.wait()


def test_a_full_disk_while_the_first_model_is_written_stops_the_run_and_keeps_it(image_root, tiny_vgg_file,
                                                                                 tmp_path, monkeypatch):
    """The first model is written in the background; its error stops the run at the next epoch end, and the
    run keeps its best model (written again after the error) and can be resumed."""
    original = runs.save_model_atomically
    calls = []

    def full_once(saved_model, path, publish=None):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(saved_model, path, publish)

    monkeypatch.setattr(runs, "save_model_atomically", full_once)
    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="file", model_file=str(tiny_vgg_file)),
        head=HeadSpec(hidden_units=(6,)),
        training=TrainSpec(epochs=4, batch_size=8, learning_rate=1e-2, early_stopping_patience=0),
    )
    folder = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"cannot save epoch \d .*No space left on device.*--resume"):
        training.train(recipe, out_dir=folder)
    assert calls[0] == "tlstudio-model-writer"  # written in the background
    run = runs.load_run(folder)
    assert run.status == "interrupted" and "No space left" in run.reason
    assert run.load_model() is not None
    assert run.metrics["best_epoch"] == pytest.approx(min(range(1, len(run.history["val_loss"]) + 1),
                                                          key=lambda e: run.history["val_loss"][e - 1]))
    assert training.resume(folder).metrics["epochs"] == 4
