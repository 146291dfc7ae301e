"""The mistakes browser: worst first, filtered by a click on a confusion-matrix cell, show in folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from tlstudio.core.use.evaluation import evaluate_probabilities
from tlstudio.gui import workers
from tlstudio.gui.pages.evaluate_page import EvaluatePage
from tlstudio.gui.state import ProjectState

CLASSES = ("circles", "squares", "stripes")


@pytest.fixture
def page(qtbot, image_root):
    page = EvaluatePage(ProjectState())
    qtbot.addWidget(page)
    page.resize(1000, 800)
    page.show()
    paths = sorted(str(p) for p in Path(image_root).rglob("*.png"))[:9]
    true = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    probabilities = np.array([
        [0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.2, 0.7, 0.1],   # circles: right, unsure, wrong (-> squares)
        [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.05, 0.9, 0.05],    # squares: one wrong (-> circles)
        [0.1, 0.1, 0.8], [0.1, 0.85, 0.05], [0.3, 0.3, 0.4],    # stripes: one wrong (-> squares), one unsure
    ])
    page.show_evaluation(evaluate_probabilities(CLASSES, paths, true, probabilities))
    yield page
    page.mistakes.shutdown()
    assert workers.stop_all(60_000)


def test_mistakes_are_listed_worst_first(page):
    records = page.mistakes.records()
    assert [r.loss for r in records] == sorted((r.loss for r in records), reverse=True)
    assert sum(not r.correct for r in records) == 3
    assert sum(r.correct for r in records) == 2
    assert page.mistakes.table.rowCount() == 5
    assert page.mistakes.table.item(0, 4).text() == f"{records[0].loss:.3f}"


def test_clicking_a_confusion_matrix_cell_filters_the_mistakes(qtbot, page):
    view = page.matrix_view
    with qtbot.waitSignal(view.cell_clicked) as clicked:
        qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.cell_center(2, 1))
    assert clicked.args == [2, 1]
    records = page.mistakes.records()
    assert len(records) == 1 and (records[0].true, records[0].predicted) == (2, 1)
    table = page.mistakes.table
    assert table.rowCount() == 1
    assert (table.item(0, 1).text(), table.item(0, 2).text()) == ("stripes", "squares")
    assert view.selected_cell == (2, 1)
    assert "predicted as 'squares'" in page.mistakes.title.text()

    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=view.cell_center(0, 0))
    assert [(r.true, r.predicted) for r in page.mistakes.records()] == [(0, 0), (0, 0)]

    page.mistakes.all_button.click()
    assert page.mistakes.table.rowCount() == 5
    assert view.selected_cell is None


def test_show_in_folder_opens_the_image_folder(page, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    page.mistakes.table.selectRow(0)
    page.mistakes.folder_button.click()
    assert [Path(url.toLocalFile()) for url in opened] == [Path(page.mistakes.records()[0].path).parent]


def test_double_click_asks_to_explain_the_image(qtbot, page):
    table = page.mistakes.table
    with qtbot.waitSignal(page.mistakes.explain_requested) as requested:
        table.itemDoubleClicked.emit(table.item(1, 0))
    assert requested.args == [page.mistakes.records()[1].path]


def test_file_names_that_repeat_across_classes_show_their_class_folder(qtbot, tmp_path):
    from PIL import Image

    paths = []
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name / "001.png")
        paths.append(str(tmp_path / name / "001.png"))
    Image.new("RGB", (8, 8)).save(tmp_path / "dogs" / "unique.png")
    paths.append(str(tmp_path / "dogs" / "unique.png"))
    page = EvaluatePage(ProjectState())
    qtbot.addWidget(page)
    page.show_evaluation(evaluate_probabilities(("cats", "dogs"), paths, [0, 1, 1],
                                                np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])))
    names = {page.mistakes.table.item(row, 0).text() for row in range(page.mistakes.table.rowCount())}
    assert names == {"cats/001.png", "dogs/001.png", "unique.png"}
    page.mistakes.shutdown()
