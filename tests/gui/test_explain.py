"""The Explain panel: a Grad-CAM overlay and activations for an image; a tensor with no spatial map is refused."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from tlstudio.core.model.classifier import build_classifier
from tlstudio.core.spec.errors import TensorNameError
from tlstudio.core.use.predict import Predictor
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.gui import workers
from tlstudio.gui.pages.explain_panel import ExplainPanel, explainer_for
from tlstudio.gui.state import ProjectState

CLASSES = ("circles", "squares", "stripes")


@pytest.fixture
def panel(qtbot, tiny_vgg_top):
    model = build_classifier(tiny_vgg_top, "fc2:0", len(CLASSES), HeadSpec(), "caffe")
    state = ProjectState()
    panel = ExplainPanel(state)
    qtbot.addWidget(panel)
    panel.set_explainer(explainer_for(Predictor(model, CLASSES, 32)))
    yield panel
    assert workers.stop_all(60_000)


def test_lists_the_spatial_tensors_with_the_nearest_to_the_cut_chosen(panel):
    names = [panel.tensor_combo.itemText(i) for i in range(panel.tensor_combo.count())]
    assert names[0] == "block1_conv1:0" and names[-1] == "block3_pool:0"
    assert "fc2:0" not in names and "flatten:0" not in names
    assert panel.tensor_combo.currentText() == "block3_pool:0"
    assert [panel.class_combo.itemText(i) for i in range(4)] == ["Predicted class", *CLASSES]


def test_grad_cam_overlay_and_activations_appear_for_an_image(qtbot, panel, image_root):
    image = next((image_root / "squares").glob("*.png"))
    with qtbot.waitSignal(panel.explained, timeout=60_000) as explained:
        panel.set_image(image)
    explanation = explained.args[0]
    assert explanation.tensor == "block3_pool:0"
    assert explanation.overlay.shape == explanation.image.shape == (48, 48, 3)
    assert explanation.maps_shape == (4, 4, 8)
    assert panel.cam_view.has_image() and panel.maps_view.has_image() and panel.image_view.has_image()
    assert "Grad-CAM" in panel.cam_caption.text() and "block3_pool:0" in panel.cam_caption.text()

    panel.class_combo.setCurrentIndex(3)
    with qtbot.waitSignal(panel.explained, timeout=60_000) as explained:
        panel.class_combo.activated.emit(3)
    assert explained.args[0].class_index == 2
    assert "stripes" in panel.cam_caption.text()


def test_a_dropped_image_is_explained(qtbot, panel, image_root):
    image = next((image_root / "circles").glob("*.png"))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(image))])
    drop = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(panel.explained, timeout=60_000):
        panel.dropEvent(drop)
    assert panel.image_path == str(image)


def test_a_tensor_without_a_spatial_map_shows_the_engines_error(qtbot, panel, image_root):
    errors = []
    panel.state.error.connect(errors.append)
    panel.tensor_combo.setCurrentText("fc2:0")
    with qtbot.waitSignal(panel.failed, timeout=60_000):
        panel.set_image(next((image_root / "circles").glob("*.png")))
    assert errors == []  # said once, inline, not also in a dialog
    assert "spatial map" in panel.message.text() and "block3_pool:0" in panel.message.text()
    assert not panel.cam_view.has_image()


def test_an_operation_name_offers_its_tensor_in_one_click(qtbot, panel, image_root):
    errors = []
    panel.state.error.connect(errors.append)
    panel.tensor_combo.setCurrentText("block2_pool")
    with qtbot.waitSignal(panel.failed, timeout=60_000) as failed:
        panel.set_image(next((image_root / "circles").glob("*.png")))
    assert isinstance(failed.args[0], TensorNameError) and errors == []
    assert "names an operation" in panel.message.text()
    assert panel.suggestion_button.isVisibleTo(panel) and panel.suggestion_button.text() == "Use block2_pool:0"
    with qtbot.waitSignal(panel.explained, timeout=60_000):
        panel.suggestion_button.click()
    assert panel.tensor_combo.currentText() == "block2_pool:0"
    assert not panel.suggestion_button.isVisibleTo(panel)
