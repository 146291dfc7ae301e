"""Training: phases, events, stopping, NaN, run folders, early stopping, BN finalisation.

Every run uses the tiny VGG-shaped base at 32x32 and 36 generated images, so
each takes a few seconds on a laptop CPU.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tlstudio.core.model import classifier
from tlstudio.core.spec import paths
from tlstudio.core.train import callbacks, runs, training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.errors import Cancelled, TrainingError
from tlstudio.core.spec.events import BatchEnded, EpochEnded, Message, PhaseStarted
from tlstudio.core.data.images import load_rgb
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.core.data.samples import make_sample_folders, make_tiny_vgg

STEPS = 4
"""30 training images (12 per class, 20% held out) in batches of 8."""


def _recipe(root, head: HeadSpec | None = None, **training) -> Recipe:
    settings = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "early_stopping_patience": 0}
    settings.update(training)
    return Recipe(
        data=DataSpec(folders=(str(root),)),
        base=BaseSpec(name="vgg16", weights="none", input_size=32),
        head=head or HeadSpec(),
        training=TrainSpec(**settings),
    )


def _accuracy(model, items) -> float:
    images = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    return float(np.mean(predicted == [item.label for item in items]))


def _of(events, kind):
    return [event for event in events if isinstance(event, kind)]


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    """One head-only run on extracted features, shared by the tests that only read it."""
    root = make_sample_folders(tmp_path_factory.mktemp("data") / "images")
    events = []
    result = training.train(
        _recipe(root, epochs=8),
        base_model=make_tiny_vgg(),
        on_event=events.append,
        out_dir=tmp_path_factory.mktemp("runs") / "run",
    )
    return root, result, events


def test_head_training_beats_chance(feature_run):
    root, result, _ = feature_run
    assert result.classes == ("circles", "squares", "stripes")
    assert result.metrics["val_accuracy"] > 0.5
    model = runs.load_run(result.run_dir).load_model()
    assert _accuracy(model, scan_dataset([root]).val) > 0.5


def test_events_arrive_in_order(feature_run):
    _, result, events = feature_run
    training_events = [e for e in events if isinstance(e, (PhaseStarted, BatchEnded, EpochEnded))]
    assert isinstance(training_events[0], PhaseStarted)
    assert training_events[0].name == "head" and training_events[0].steps_per_epoch == STEPS
    expected = ["PhaseStarted"] + (["BatchEnded"] * STEPS + ["EpochEnded"]) * 8
    assert [type(e).__name__ for e in training_events] == expected
    batches = _of(events, BatchEnded)
    assert [b.step for b in batches] == list(range(len(batches)))
    assert [(b.epoch, b.batch) for b in batches[:5]] == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0)]
    assert all(b.images_per_second > 0 and b.eta_seconds >= 0 and b.learning_rate > 0 for b in batches)
    assert batches[-1].eta_seconds == 0
    epochs = _of(events, EpochEnded)
    assert set(epochs[0].metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert result.history["val_loss"] == [e.metrics["val_loss"] for e in epochs]


def test_feature_path_is_announced(feature_run):
    _, _, events = feature_run
    assert any("extracted" in m.text and "once" in m.text for m in _of(events, Message))


def test_run_folder_holds_every_file(feature_run):
    root, result, _ = feature_run
    names = {path.name for path in result.run_dir.iterdir()}
    assert names == {"recipe.json", "classes.json", "history.json", "metrics.json", "model.keras", "log.txt",
                     "status.json"}
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "finished"
    run = runs.load_run(result.run_dir)
    assert run.classes == result.classes
    assert run.recipe.cut_tensor == "block3_pool:0"
    assert run.recipe.data.folders == (str(root),)
    assert json.loads((result.run_dir / "history.json").read_text())["loss"] == result.history["loss"]
    assert set(run.metrics) >= {"val_accuracy", "val_loss", "train_accuracy", "train_loss"}
    log = (result.run_dir / "log.txt").read_text()
    assert "Phase head" in log and "head epoch 8" in log


def test_saved_model_is_the_best_epoch(feature_run):
    root, result, _ = feature_run
    best = int(np.argmin(result.history["val_loss"])) + 1
    assert result.best_epoch == best
    assert result.metrics["val_loss"] == pytest.approx(min(result.history["val_loss"]))
    model = runs.load_run(result.run_dir).load_model()
    val = scan_dataset([root]).val
    images = np.stack([load_rgb(item.path, 32) for item in val]).astype(np.float32)
    probabilities = model.predict(images, verbose=0)
    loss = -np.log(probabilities[np.arange(len(val)), [item.label for item in val]]).mean()
    assert loss == pytest.approx(result.metrics["val_loss"], abs=1e-4)


def test_live_path_with_augmentation_gives_a_working_model(image_root, tmp_path):
    events = []
    result = training.train(
        _recipe(image_root, augmentation=True, epochs=3),
        base_model=make_tiny_vgg(),
        on_event=events.append,
        out_dir=tmp_path / "run",
    )
    assert any("live" in m.text for m in _of(events, Message))
    assert not any("extract" in getattr(e, "task", "") for e in events)
    model = runs.load_run(result.run_dir).load_model()
    probabilities = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert len(result.history["loss"]) == 3


def test_stop_after_an_epoch_keeps_the_best_weights(image_root):
    events = []
    result = training.train(
        _recipe(image_root, epochs=3),
        base_model=make_tiny_vgg(),
        on_event=events.append,
        should_stop=lambda: len(_of(events, BatchEnded)) >= STEPS + 2,
    )
    assert result.cancelled
    assert len(_of(events, BatchEnded)) == STEPS + 2
    assert len(_of(events, EpochEnded)) == 1
    assert result.best_epoch == 1
    assert [run.path for run in runs.list_runs()] == [result.run_dir]
    assert runs.load_run(result.run_dir).load_model() is not None


def test_stop_within_one_training_batch_before_any_epoch(image_root):
    events = []
    with pytest.raises(Cancelled):
        training.train(
            _recipe(image_root),
            base_model=make_tiny_vgg(),
            on_event=events.append,
            should_stop=lambda: len(_of(events, BatchEnded)) >= 2,
        )
    assert len(_of(events, BatchEnded)) == 2
    assert not _of(events, EpochEnded)
    assert not list(paths.runs_dir().glob("run-*")), "a run stopped before its first epoch leaves no folder"


def test_stop_during_feature_extraction(image_root):
    events = []
    with pytest.raises(Cancelled):
        training.train(
            _recipe(image_root),
            base_model=make_tiny_vgg(),
            on_event=events.append,
            should_stop=lambda: any(getattr(e, "task", "") == "extract" and e.done for e in events),
        )
    assert [e.done for e in events if getattr(e, "task", "") == "extract"] == [0, 8]
    assert not _of(events, BatchEnded)


def test_stop_within_one_validation_batch(image_root):
    events = []
    checks_after_last_batch = []

    def should_stop() -> bool:
        if len(_of(events, BatchEnded)) < STEPS:
            return False
        checks_after_last_batch.append(1)
        return len(checks_after_last_batch) >= 2  # the first check follows the batch, the second is validation's

    with pytest.raises(Cancelled):
        training.train(_recipe(image_root), base_model=make_tiny_vgg(), on_event=events.append,
                       should_stop=should_stop)
    assert len(_of(events, BatchEnded)) == STEPS
    assert not _of(events, EpochEnded)


def test_nan_loss_stops_with_a_learning_rate_hint(image_root, monkeypatch):
    monkeypatch.setattr(training, "_optimizer", lambda spec, rate, steps: keras.optimizers.SGD(float("nan")))
    with pytest.raises(TrainingError, match=r"became (nan|inf).*learning rate.*try 0\.001.*learning_rate=0\.01"):
        training.train(_recipe(image_root, head=HeadSpec(batch_norm=False)), base_model=make_tiny_vgg())


def test_fine_tuning_unfreezes_the_base_at_a_tenth_of_the_rate(image_root, tmp_path):
    base = make_tiny_vgg()
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers if layer.weights}
    events = []
    result = training.train(
        _recipe(image_root, epochs=1, fine_tune_epochs=1, fine_tune_layers=2),
        base_model=base,
        on_event=events.append,
        out_dir=tmp_path / "run",
    )
    phases = _of(events, PhaseStarted)
    assert [p.name for p in phases] == ["head", "fine-tune"]
    assert phases[1].learning_rate == pytest.approx(1e-3)
    tuned = [b for b in _of(events, BatchEnded) if b.phase == "fine-tune"]
    assert len(tuned) == STEPS and all(b.learning_rate == pytest.approx(1e-3) for b in tuned)
    assert any("block3_conv2, block3_conv3" in m.text for m in _of(events, Message))
    saved = runs.load_run(result.run_dir).load_model().get_layer("base")
    changed = {
        name: not all(np.array_equal(a, b) for a, b in zip(weights, saved.get_layer(name).get_weights()))
        for name, weights in before.items()
    }
    assert len(result.history["loss"]) == 2 and result.metrics["head_epochs"] == 1
    assert result.best_epoch == 2, "the fine-tuned weights are the ones kept"
    assert changed["block3_conv3"] and changed["block3_conv2"]
    assert not changed["block1_conv1"] and not changed["block3_conv1"]
    for name, weights in before.items():
        for kept, original in zip(base.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(kept, original, err_msg=f"the caller's base changed in {name}")


def test_cosine_decay_and_sgd(image_root, tmp_path):
    events = []
    training.train(
        _recipe(image_root, optimizer="sgd", cosine_decay=True, epochs=2),
        base_model=make_tiny_vgg(),
        on_event=events.append,
        out_dir=tmp_path / "run",
    )
    rates = [b.learning_rate for b in _of(events, BatchEnded)]
    assert rates == sorted(rates, reverse=True) and rates[0] < 1e-2 and rates[-1] < 1e-4


def test_early_stopping_restores_the_best_weights(image_root, tmp_path, monkeypatch):
    """Validation losses are replaced by a scripted sequence; the best is epoch 2."""
    scripted = iter([1.0, 0.5, 0.9, 0.95, 0.97, 0.99])
    weights_at = {}
    original = callbacks.EpochRecord.on_epoch_end

    def scripted_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = next(scripted)  # the one logs dict every later callback sees
        weights_at[self.state.epoch + 1] = [w.copy() for w in self.model.get_weights()]
        original(self, epoch, logs)

    monkeypatch.setattr(callbacks.EpochRecord, "on_epoch_end", scripted_epoch_end)
    result = training.train(
        _recipe(image_root, epochs=6, early_stopping_patience=2),
        base_model=make_tiny_vgg(),
        out_dir=tmp_path / "run",
    )
    assert result.stopped_early
    assert result.history["val_loss"] == [1.0, 0.5, 0.9, 0.95]
    assert result.best_epoch == 2
    model = runs.load_run(result.run_dir).load_model()
    head = model.get_layer("head_predictions").get_weights()
    head_at_best = weights_at[2][-2:]
    for saved, best in zip(head, head_at_best):
        np.testing.assert_array_equal(saved, best)
    assert not np.array_equal(head[0], weights_at[4][-2])


def test_class_weights_are_balanced():
    from tlstudio.core.data.dataset import ImageItem

    items = [ImageItem(f"{i}.png", 0, 1) for i in range(6)] + [ImageItem("x.png", 1, 1), ImageItem("y.png", 1, 1)]
    weights = training._class_weights(items, 2)
    assert weights == pytest.approx({0: 8 / 12, 1: 8 / 4})


def test_a_non_empty_output_folder_is_refused(image_root, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "model.keras").write_text("x")
    from tlstudio.core.spec.errors import UserError

    with pytest.raises(UserError, match="not empty"):
        training.train(_recipe(image_root), base_model=make_tiny_vgg(), out_dir=tmp_path / "used")


def test_batch_norm_finalisation_matches_numpy(image_root):
    """Each head BN layer's moving statistics equal numpy's over its inputs, computed independently."""
    model = classifier.build_classifier(make_tiny_vgg(), "block3_pool:0", 3, HeadSpec(hidden_units=(6,)), "caffe")
    items = scan_dataset([image_root]).train
    images = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    model.get_layer("head_dense_1").set_weights([np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32)])

    training.finalize_batch_norm(model, items, 32, batch_size=7)

    for norm, before in (("head_bn", "head_pool"), ("head_bn_1", "head_dense_1")):
        probe = keras.Model(model.inputs, model.get_layer(before).output)
        values = probe.predict(images, verbose=0).astype(np.float64)
        layer = model.get_layer(norm)
        np.testing.assert_allclose(layer.moving_mean.numpy(), values.mean(axis=0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy(), values.var(axis=0), rtol=1e-4, atol=1e-4)
        assert not np.allclose(layer.moving_variance.numpy(), 1.0)


@pytest.mark.parametrize("shape, axis", [((10, 4), 1), ((7, 3, 2, 5), 3), ((9, 6, 2), 1), ((1, 3), 1), ((0, 3), 1)])
def test_moments_in_steps_equal_numpys_mean_and_variance(shape, axis, monkeypatch):
    from tlstudio.core.train import batch_norm

    monkeypatch.setattr(batch_norm, "MOMENT_ROWS", 3)
    values = (np.random.default_rng(2).normal(size=shape) * 50 + 1000).astype(np.float32)
    mean, variance = batch_norm.moments(values, axis)
    axes = tuple(a for a in range(len(shape)) if a != axis)
    if values.size:
        np.testing.assert_allclose(mean, values.astype(np.float64).mean(axis=axes), rtol=1e-12)
        np.testing.assert_allclose(variance, values.astype(np.float64).var(axis=axes), rtol=1e-9)
    else:
        assert mean.shape == variance.shape == (shape[axis],)


def test_finalisation_in_a_run_is_reported_and_kept(image_root, tmp_path):
    events = []
    result = training.train(
        _recipe(image_root, head=HeadSpec(hidden_units=(4,)), finalize_batch_norm=True, epochs=1),
        base_model=make_tiny_vgg(),
        on_event=events.append,
        out_dir=tmp_path / "run",
    )
    assert any("finalised in 2 layer" in m.text for m in _of(events, Message))
    model = runs.load_run(result.run_dir).load_model()
    items = scan_dataset([image_root]).train
    images = np.stack([load_rgb(item.path, 32) for item in items]).astype(np.float32)
    pooled = keras.Model(model.inputs, model.get_layer("head_pool").output).predict(images, verbose=0)
    np.testing.assert_allclose(model.get_layer("head_bn").moving_mean.numpy(), pooled.mean(axis=0), atol=1e-4)


def test_a_model_file_base_is_built_from_the_recipe(image_root, tiny_vgg_file, tmp_path):
    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="file", model_file=str(tiny_vgg_file)),
        training=TrainSpec(epochs=1, batch_size=8, early_stopping_patience=0),
    )
    events = []
    result = training.train(recipe, on_event=events.append, out_dir=tmp_path / "run")
    assert any("takes 32x32 images" in m.text for m in _of(events, Message))
    run = runs.load_run(result.run_dir)
    assert run.recipe.base.input_size == 32
    assert run.load_model().input_shape == (None, 32, 32, 3)
