"""The Data page's Health and Map tabs: a check lists findings, actions change the project, the map is clickable."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import Qt

from tlstudio.gui import workers
from tlstudio.gui.pages.data_page import DataPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def state(image_root, tiny_vgg):
    source = sorted((image_root / "circles").iterdir())[0]
    shutil.copy(source, image_root / "squares" / "copied.png")
    state = ProjectState()
    state.update("base", input_size=32)
    state.update("data", folders=(str(image_root),))
    state.set_base_model(tiny_vgg)
    state.set_tensorflow_ready(True)
    return state


@pytest.fixture
def page(qtbot, state, image_root):
    page = DataPage(state)
    qtbot.addWidget(page)
    qtbot.waitUntil(lambda: state.dataset is not None and not page.is_scanning(), timeout=60_000)
    yield page
    assert workers.stop_all(60_000)


def test_check_lists_the_copy_and_actions_change_the_project_not_the_files(qtbot, page, state, image_root):
    panel = page.health_panel
    assert [page.tabs.tabText(i) for i in range(page.tabs.count())][-2:] == ["Health", "Map"]
    with qtbot.waitSignal(panel.checked, timeout=120_000) as checked:
        panel.run_button.click()
    report = checked.args[0]
    copy = str(image_root / "squares" / "copied.png")
    assert any(copy in pair.paths for pair in report.near_duplicates)
    rows = [panel.tree.topLevelItem(i) for i in range(panel.tree.topLevelItemCount())]
    assert len(rows) == len(report.mislabeled) + len(report.near_duplicates) + len(report.outliers)

    panel.select_path(report.near_duplicates[0].paths[0])
    chosen = panel.selected_paths()
    panel.exclude_selected()
    assert state.recipe.data.excluded_files == tuple(chosen)

    target = str(sorted((image_root / "stripes").iterdir())[0])
    panel.show_report(report)
    panel._add("outlier", target, "", "", 0.5)
    panel.select_path(target)
    panel.relabel_selected("circles")
    assert (target, "circles") in state.recipe.data.relabels
    assert (image_root / "squares" / "copied.png").exists()
    qtbot.waitUntil(lambda: state.dataset is not None and not page.is_scanning()
                    and all(i.path != chosen[0] for i in (*state.dataset.train, *state.dataset.val)),
                    timeout=60_000)


def test_map_draws_points_and_a_click_selects_the_finding(qtbot, page, state):
    chart = page.map_panel
    with qtbot.waitSignal(chart.scatter.sigPlotChanged, timeout=120_000):
        chart.run_button.click()
    assert len(chart.scatter.points()) == len(state.dataset.train) + len(state.dataset.val)
    path = chart.scatter.points()[0].data()
    page.tabs.setCurrentIndex(0)
    chart.image_chosen.emit(path)
    assert page.tabs.currentWidget() is page.health_panel


def test_the_map_rings_what_the_last_evaluation_got_wrong(qtbot, page, state):
    from tlstudio.core.use.evaluation import ImageRecord
    from tlstudio.core.use.feature_map import FLAG_COLOURS

    chart = page.map_panel
    with qtbot.waitSignal(chart.scatter.sigPlotChanged, timeout=120_000):
        chart.run_button.click()
    paths = [point.data() for point in chart.scatter.points()]
    records = (ImageRecord(paths[0], 0, 1, (0.2, 0.8, 0.0), 1.6), ImageRecord(paths[1], 0, 0, (0.9, 0.1, 0.0), 0.1))
    evaluation = type("Evaluation", (), {"records": records})()
    state.evaluated.emit(evaluation)

    def ring(path):
        point = next(p for p in chart.scatter.points() if p.data() == path)
        return point.pen().color().getRgb()[:3], point.pen().style()

    assert ring(paths[0]) == (FLAG_COLOURS["misclassified"], Qt.PenStyle.SolidLine)
    assert ring(paths[1])[1] == Qt.PenStyle.NoPen
    assert "black wrong in the last evaluation" in chart.status.text()


def test_apply_to_folders_moves_files_and_undo_brings_them_back(qtbot, page, state, image_root, tmp_path):
    panel = page.health_panel
    target = sorted((image_root / "circles").iterdir())[0]
    state.update("data", excluded_files=(str(target),))
    panel.apply_to_folders(str(tmp_path / "excluded"))
    assert not target.exists() and (tmp_path / "excluded" / target.name).exists()
    assert state.recipe.data.excluded_files == ()
    with qtbot.waitSignal(panel.files_moved):
        panel.undo_button.click()
    assert target.exists()


def test_apply_into_the_data_folder_is_refused_with_a_message(page, state, image_root):
    panel = page.health_panel
    target = sorted((image_root / "circles").iterdir())[0]
    state.update("data", excluded_files=(str(target),))
    panel.apply_to_folders(str(image_root / "excluded"))
    assert target.exists() and "outside the data folders" in panel.status.text()
    assert state.recipe.data.excluded_files == (str(target),)


def test_hovering_a_point_shows_the_image():
    from tlstudio.gui.health_panel import _tip

    text = _tip(0.0, 0.0, "/data/cats/a b.png")
    assert "<img" in text and "a%20b.png" in text and text.endswith("a b.png")
