"""The Runs page's status column, broken run folders and the Resume button."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.errors import TrainingError
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, TrainSpec
from tlstudio.core.train import callbacks, runs, training
from tlstudio.gui import workers
from tlstudio.gui.pages.runs_page import COLUMNS, RunsPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def interrupted(image_root, tiny_vgg_file, monkeypatch):
    """A run that ran out of memory after its first of two epochs, in the runs folder."""
    recipe = Recipe(
        data=DataSpec(folders=(str(image_root),)),
        base=BaseSpec(name="file", model_file=str(tiny_vgg_file)),
        training=TrainSpec(epochs=2, batch_size=8, early_stopping_patience=0),
    )
    original = callbacks.Checkpointing.on_epoch_end

    def failing(self, index, logs=None):
        original(self, index, logs)
        raise TrainingError("Training stopped: the device ran out of memory with batch size 8.")

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.Checkpointing, "on_epoch_end", failing)
        with pytest.raises(TrainingError):
            training.train(recipe)
    (folder,) = [run.path for run in runs.list_runs()]
    return folder


def test_status_column_resume_and_broken_folders(qtbot, interrupted):
    broken = runs.new_run_dir()
    (broken / runs.CLASSES_FILE).write_text("[oops", encoding="utf-8")
    (broken / runs.RECIPE_FILE).write_text("{}", encoding="utf-8")
    state = ProjectState()
    state.set_tensorflow_ready(True)
    page = RunsPage(state)
    qtbot.addWidget(page)
    qtbot.waitUntil(lambda: len(page.runs) == 1 and page.job is None, timeout=30_000)
    status_column = COLUMNS.index("Status")
    assert "<b>1 run</b>" in page.folder_label.text()
    assert page.table.item(0, status_column).text().startswith("interrupted: Training stopped: the device ran out")
    assert "1 broken run folder, not listed" in page.folder_label.text() and broken.name in page.folder_label.text()

    page.table.selectRow(0)
    assert page.resume_button.isEnabled()
    with qtbot.waitSignal(state.run_finished, timeout=120_000) as finished:
        page.resume_button.click()
        assert not page.resume_button.isEnabled(), "one resume at a time"
    result = finished.args[0]
    assert result.run_dir == interrupted and len(result.history["loss"]) == 2
    qtbot.waitUntil(lambda: page.resume_job is None and page.job is None
                    and page.table.item(0, status_column).text() == "finished", timeout=30_000)
    page.table.selectRow(0)
    assert not page.resume_button.isEnabled(), "a finished run cannot be resumed"
    assert workers.stop_all(60_000)
