"""The Train page on generated images and a tiny VGG: live curves, Pause, Resume, Stop."""

from __future__ import annotations

import pytest

from tlstudio.core.train import training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.events import BatchEnded
from tlstudio.gui import workers
from tlstudio.gui.pages.train_page import TrainPage, device_label
from tlstudio.gui.state import ProjectState


@pytest.fixture
def state(image_root, tiny_vgg):
    state = ProjectState()
    state.update("base", input_size=32)
    state.update("training", epochs=2, batch_size=2, early_stopping_patience=0)
    state.set_dataset(scan_dataset([image_root]))
    state.set_base_model(tiny_vgg)
    state.set_tensorflow_ready(True)
    return state


@pytest.fixture
def page(qtbot, state):
    page = TrainPage(state)
    qtbot.addWidget(page)
    page.show()
    yield page
    page.stop()
    assert workers.stop_all(60_000)


def test_training_adds_points_to_the_curves(qtbot, page, state):
    with qtbot.waitSignal(page.finished, timeout=120_000) as finished:
        page.start_button.click()
    result = finished.args[0]
    assert result is not None and not result.cancelled
    assert state.last_run is result
    page.plot.flush()
    steps = page._phase.steps_per_epoch
    assert page.plot.point_count("batch_loss") == 2 * steps
    assert page.plot.point_count("batch_loss_smooth") == 2 * steps
    assert page.plot.point_count("learning_rate") == 2 * steps
    assert page.plot.point_count("train_loss") == 2
    assert page.plot.point_count("val_accuracy") == 2
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert "Finished" in page.status_label.text()
    assert page.progress.value() == page.progress.maximum()
    assert page.progress.format() == f"Finished — kept epoch {result.best_epoch}"
    assert page.plot.best_epoch == result.best_epoch


def test_pause_resume_and_stop(qtbot, page, state, monkeypatch):
    real_train = training.train

    def train_pausing_at_steps(recipe, on_event, should_stop, **kwargs):
        def spy(event):
            on_event(event)
            if isinstance(event, BatchEnded) and event.step in (2, 20):
                page.request_pause()  # from the worker thread: only sets a flag

        return real_train(recipe, on_event=spy, should_stop=should_stop, **kwargs)

    monkeypatch.setattr(training, "train", train_pausing_at_steps)

    with qtbot.waitSignal(page.paused, timeout=120_000):
        page.start_button.click()
    assert page.is_paused() and page.job.is_running()
    assert page.pause_button.text() == "Resume"
    # Events arrive in order, so every batch before the pause has been received.
    count = page._batch_count
    assert count == 3
    qtbot.wait(200)  # a negative check: the blocked worker sends nothing more
    assert page._batch_count == count

    with qtbot.waitSignal(page.paused, timeout=120_000):
        page.pause_button.click()  # Resume
    assert page._batch_count > count
    page.plot.flush()
    assert page.plot.point_count("batch_loss") >= 20
    assert page.plot.point_count("train_loss") == 1

    with qtbot.waitSignal(page.finished, timeout=120_000) as finished:
        page.stop_button.click()
    result = finished.args[0]
    assert result is not None and result.cancelled
    assert result.best_epoch == 1
    assert state.last_run is result
    assert not page.is_running()
    assert workers.active_workers() == [] or all(w.name != "training" for w in workers.active_workers())
    assert "Stopped" in page.status_label.text()


def test_stop_while_paused_before_the_first_epoch_ends_leaves_no_run(qtbot, page, state, monkeypatch):
    real_train = training.train

    def train_pausing(recipe, on_event, should_stop, **kwargs):
        def spy(event):
            on_event(event)
            if isinstance(event, BatchEnded) and event.step == 0:
                page.request_pause()

        return real_train(recipe, on_event=spy, should_stop=should_stop, **kwargs)

    monkeypatch.setattr(training, "train", train_pausing)
    with qtbot.waitSignal(page.paused, timeout=120_000):
        page.start()
    with qtbot.waitSignal(page.finished, timeout=60_000) as finished:
        page.stop()
    assert finished.args[0] is None
    assert state.last_run is None
    assert "nothing was saved" in page.status_label.text()


def test_settings_are_bound_to_the_recipe(qtbot, page, state):
    page.epochs_spin.setValue(7)
    page.lr_spin.setValue(0.0005)
    page.cosine_check.setChecked(True)
    training_spec = state.recipe.training
    assert (training_spec.epochs, training_spec.learning_rate, training_spec.cosine_decay) == (7, 0.0005, True)
    state.update("training", batch_size=16)
    assert page.batch_spin.value() == 16


def test_device_badge_comes_from_the_engine(qtbot, page):
    qtbot.waitUntil(lambda: page.badge.text() != "Detecting device…", timeout=60_000)
    assert page.badge.text().startswith(("CPU", "GPU"))


def test_an_early_stop_shows_a_full_bar_and_the_kept_epoch(qtbot, page, state, monkeypatch, tmp_path):
    from types import SimpleNamespace

    def stops_early(recipe, on_event, should_stop, **kwargs):
        return SimpleNamespace(cancelled=False, stopped_early=True, best_epoch=4, metrics={"val_accuracy": 0.9},
                               run_dir=tmp_path)

    monkeypatch.setattr(training, "train", stops_early)
    with qtbot.waitSignal(page.finished, timeout=60_000):
        page.start()
    assert page.progress.value() == page.progress.maximum() > 0
    assert page.progress.format() == "Stopped early — kept epoch 4"
    assert "ETA" not in page.progress.format()


def test_the_device_badge_is_short_and_the_reason_is_in_its_tooltip(page):
    assert device_label("CPU — TensorFlow was built without CUDA support") == (
        "CPU — no GPU found", "TensorFlow was built without CUDA support")
    assert device_label("GPU: NVIDIA A100 (40 GB)") == ("GPU: NVIDIA A100 (40 GB)", "")
    page.show_device("CPU — the NVIDIA driver is not loaded")
    assert page.badge.text() == "CPU — no GPU found"
    assert "the NVIDIA driver is not loaded" in page.badge.toolTip() and "GPU Doctor" in page.badge.toolTip()


def test_missing_weights_offer_lite0_in_one_click(qtbot, page, state, monkeypatch):
    from tlstudio.core.spec.errors import WeightsError
    from tlstudio.gui import errors

    shown = []
    monkeypatch.setattr(errors.ErrorDialog, "exec", lambda self: shown.append(self) or 0)

    def offline(recipe, on_event, should_stop, **kwargs):
        raise WeightsError("The VGG16 ImageNet weights are not on this computer. Download them from https://x/y.h5.")

    monkeypatch.setattr(training, "train", offline)
    state.update(cut_tensor="block2_pool:0")
    with qtbot.waitSignal(page.finished, timeout=60_000):
        page.start()
    assert page.status_label.text() == "Training failed: The VGG16 ImageNet weights are not on this computer."
    dialog = shown[0]
    assert "https://" not in dialog.text() and "https://x/y.h5" in dialog.detailedText()
    dialog.action_buttons["Use EfficientNet-Lite0"].click()
    assert state.recipe.base.name == "efficientnet-lite0" and state.recipe.cut_tensor is None
    assert state.base_model is None
