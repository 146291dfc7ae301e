"""The Predict page: dropped images and folders get a row each with their top-k predictions."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from tlstudio.core.train import training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.spec.recipe import BaseSpec, Recipe, TrainSpec
from tlstudio.core.data.samples import make_sample_folders
from tlstudio.gui import workers
from tlstudio.gui.pages.predict_page import PREDICTION_ROLE, PredictPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def trained(tmp_path, tiny_vgg):
    root = make_sample_folders(tmp_path / "images", per_class=6)
    recipe = Recipe(base=BaseSpec(input_size=32), training=TrainSpec(epochs=1, batch_size=8))
    return root, training.train(recipe, dataset=scan_dataset([root]), base_model=tiny_vgg)


@pytest.fixture
def page(qtbot, trained):
    state = ProjectState()
    state.set_last_run(trained[1])
    page = PredictPage(state)
    qtbot.addWidget(page)
    yield page
    assert workers.stop_all(60_000)


def drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)
    return event


def test_dropping_a_folder_and_a_file_shows_a_row_per_image(qtbot, page, trained, tmp_path):
    root, result = trained
    assert result.run_dir.name in page.model_label.text()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with qtbot.waitSignal(page.predicted, timeout=60_000) as predicted:
        event = drop(page, [root / "circles", broken])
    assert event.isAccepted()
    predictions = predicted.args[0]
    assert len(predictions) == 7
    assert page.row_count() == 7
    good = [p for p in predictions if not p.error]
    assert len(good) == 6 and all(len(p.top) == 3 for p in good)
    assert {name for name, _ in good[0].top} == {"circles", "squares", "stripes"}
    assert page.table.item(0, 1).data(PREDICTION_ROLE) == predictions[0]
    assert [p.error for p in predictions if p.error] == ["not an image"]
    assert page.hint.text().startswith("6 images classified, 1 could not be read.")


def test_top_k_predicts_again_with_fewer_bars(qtbot, page, trained):
    root, _ = trained
    with qtbot.waitSignal(page.predicted, timeout=60_000):
        page.add_paths([next((root / "squares").glob("*.png"))])
    with qtbot.waitSignal(page.predicted, timeout=60_000) as predicted:
        page.top_k_spin.setValue(1)
    assert page.row_count() == 1 and len(predicted.args[0][0].top) == 1
