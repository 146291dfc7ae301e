"""The Runs page: lists the runs with their recipes and metrics, overlays two, opens one as the current run."""

from __future__ import annotations

import pytest

from tlstudio.core.train import training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.recipe import BaseSpec, HeadSpec, Recipe, TrainSpec
from tlstudio.gui import workers
from tlstudio.gui.pages.runs_page import RunsPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def two_runs(image_root, tiny_vgg):
    dataset = scan_dataset([image_root])
    first = training.train(
        Recipe(base=BaseSpec(input_size=32), training=TrainSpec(epochs=1, batch_size=8)),
        dataset=dataset, base_model=tiny_vgg,
    )
    second = training.train(
        Recipe(base=BaseSpec(input_size=32), cut_tensor="block2_pool:0", head=HeadSpec(hidden_units=(8,)),
               training=TrainSpec(epochs=2, batch_size=8, early_stopping_patience=0)),
        dataset=dataset, base_model=tiny_vgg,
    )
    return first, second


@pytest.fixture
def page(qtbot, two_runs):
    state = ProjectState()
    state.set_tensorflow_ready(True)
    page = RunsPage(state)
    qtbot.addWidget(page)
    qtbot.waitUntil(lambda: len(page.runs) == 2 and page.job is None, timeout=30_000)
    yield page
    assert workers.stop_all(60_000)


def test_lists_runs_newest_first_with_recipe_and_metrics(page, two_runs):
    first, second = two_runs
    table = page.table
    assert table.rowCount() == 2
    row = {table.item(r, 0).text(): [table.item(r, c).text() for c in range(8)] for r in range(2)}
    assert table.item(0, 0).text() == second.run_dir.name
    newest = row[second.run_dir.name]
    assert newest[2] == "VGG16 @ 32px"
    assert newest[3] == "block2_pool:0"
    assert newest[4] == "avg pool, BN, dense 8"
    assert newest[5] == "2"
    assert newest[6] == f"{second.metrics['val_accuracy']:.1%}"
    assert row[first.run_dir.name][3] == "block3_pool:0"  # the default cut, as the run recorded it


def test_selecting_two_runs_overlays_their_curves(page, two_runs):
    first, second = two_runs
    page.select_runs([first.run_dir.name, second.run_dir.name])
    assert {run.name for run in page.selected_runs()} == {first.run_dir.name, second.run_dir.name}
    curves = page.curves
    assert curves.point_count(second.run_dir.name, "loss") == 2
    assert curves.point_count(second.run_dir.name, "val_accuracy") == 2
    assert curves.point_count(first.run_dir.name, "val_loss") == 1
    assert "against" in page.curves_title.text()
    assert not page.use_button.isEnabled()


def test_use_as_current_run_sets_the_projects_last_run(qtbot, page, two_runs):
    first, _ = two_runs
    page.select_runs([first.run_dir.name])
    assert page.use_button.isEnabled()
    with qtbot.waitSignal(page.state.run_finished) as finished:
        page.use_button.click()
    result = finished.args[0]
    assert isinstance(result, training.RunResult)
    assert result.run_dir == first.run_dir and result.classes == first.classes
    assert page.state.last_run is result
    assert result.metrics["val_accuracy"] == pytest.approx(first.metrics["val_accuracy"])


def test_runs_are_experiments_with_data_classes_a_title_and_notes(qtbot, page, two_runs, tmp_path, image_root):
    from tlstudio.core.spec.recipe import DataSpec
    from tlstudio.core.train.run_notes import read_notes
    from tlstudio.core.train.runs import Run
    from tlstudio.gui.pages.runs_page import COLUMNS, data_summary

    table = page.table
    column = {name: COLUMNS.index(name) for name in ("Data", "Classes", "Notes")}
    assert table.item(0, column["Data"]).text() == "—"  # trained on a dataset given in code, not folders
    folders = Recipe(data=DataSpec(folders=(str(image_root), str(tmp_path / "extra"))))
    assert data_summary(Run(tmp_path, folders, ("a", "b"))) == f"{image_root.name} + extra"
    assert table.item(0, column["Classes"]).text() == "3"
    newest = two_runs[1].run_dir
    table.item(0, 0).setText("deeper cut")
    table.item(0, column["Notes"]).setText("block2 looks better")
    assert read_notes(newest).title == "deeper cut" and read_notes(newest).notes == "block2 looks better"
    page.refresh()
    qtbot.waitUntil(lambda: page.job is None, timeout=30_000)
    assert table.item(0, 0).text() == "deeper cut"
    assert table.item(0, column["Notes"]).text() == "block2 looks better"

    page.filter_data("—")
    assert not table.isRowHidden(0) and not table.isRowHidden(1)
    page.data_filter.addItem("other-images")
    page.filter_data("other-images")
    assert table.isRowHidden(0) and table.isRowHidden(1)
    page.filter_data(None)
    assert not table.isRowHidden(0)


def test_a_title_that_cannot_be_saved_says_why_and_reverts(qtbot, page, monkeypatch):
    from tlstudio.gui.pages import runs_page

    errors = []
    page.state.error.connect(errors.append)

    def read_only(run_dir, notes):
        raise runs_page.UserError("Cannot save the notes of run 'x': Read-only file system.")

    monkeypatch.setattr(runs_page, "write_notes", read_only)
    name = page.table.item(0, 0).text()
    page.table.item(0, 0).setText("new title")
    assert page.table.item(0, 0).text() == name
    assert "Read-only" in str(errors[0])
