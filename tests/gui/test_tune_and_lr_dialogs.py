"""Find the best recipe (live leaderboard, Use this recipe) and the learning-rate finder (curve, Use this rate)."""

from __future__ import annotations

import pytest

from tlstudio.core.data.dataset import scan_dataset
from tlstudio.gui import workers
from tlstudio.gui.lr_finder_dialog import LrFinderDialog
from tlstudio.gui.pages.model_page import ModelPage
from tlstudio.gui.pages.train_page import TrainPage
from tlstudio.gui.state import ProjectState
from tlstudio.gui.tune_dialog import TuneDialog


@pytest.fixture
def state(image_root, tiny_vgg):
    state = ProjectState()
    state.update("base", input_size=32)
    state.set_dataset(scan_dataset([image_root]))
    state.set_base_model(tiny_vgg)
    state.set_tensorflow_ready(True)
    yield state
    assert workers.stop_all(60_000)


def test_tune_dialog_fills_the_leaderboard_and_uses_the_chosen_recipe(qtbot, state):
    dialog = TuneDialog(state)
    qtbot.addWidget(dialog)
    dialog.budget.setValue(10)
    dialog.job.run_button.click()
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=180_000)
    assert dialog.table.rowCount() == len(dialog.result.leaderboard) >= 1
    dialog.use_button.click()
    best = dialog.result.best.candidate
    assert state.recipe.cut_tensor == best.cut_tensor
    assert state.recipe.training.learning_rate == best.learning_rate


def test_stop_ends_the_search_and_keeps_the_leaderboard(qtbot, state):
    dialog = TuneDialog(state)
    qtbot.addWidget(dialog)
    dialog.budget.setValue(600)
    dialog.job.run_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() >= 1, timeout=180_000)
    dialog.job.stop_button.click()
    qtbot.waitUntil(lambda: dialog.job.job is None, timeout=120_000)
    assert dialog.table.rowCount() >= 1 and dialog.use_button.isEnabled()


def test_lr_finder_marks_the_suggestion_and_uses_it(qtbot, state):
    dialog = LrFinderDialog(state)
    qtbot.addWidget(dialog)
    dialog.job.run_button.click()
    qtbot.waitUntil(lambda: dialog.curve is not None, timeout=180_000)
    assert dialog.marker.isVisible() and len(dialog.line.getData()[0]) == len(dialog.curve.rates)
    dialog.use_button.click()
    assert state.recipe.training.learning_rate == pytest.approx(dialog.curve.suggestion, rel=0.06)


def test_pages_have_the_buttons(qtbot, state):
    model_page, train_page = ModelPage(state), TrainPage(state)
    qtbot.addWidget(model_page)
    qtbot.addWidget(train_page)
    assert model_page.tune_button.text() == "Find the best recipe…"
    assert train_page.lr_find_button.isEnabled()
