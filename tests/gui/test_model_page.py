"""The Model page on a tiny VGG: the network view, choosing the cut, the head's batch-norm toggle."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tlstudio.core.model import backbones
from tlstudio.core.spec.errors import WeightsError
from tlstudio.core.model.tensors import catalogue
from tlstudio.gui import workers
from tlstudio.gui.pages.model_page import ModelPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def state():
    state = ProjectState()
    state.update("base", input_size=32)
    return state


@pytest.fixture
def page(qtbot, state, tiny_vgg):
    page = ModelPage(state)
    qtbot.addWidget(page)
    page.resize(1300, 800)
    page.show()
    with qtbot.waitSignal(page.summary_ready, timeout=30_000):
        state.set_base_model(tiny_vgg)
    yield page
    workers.stop_all()


def _click_row(qtbot, page, name):
    tree = page.network_view.tree
    index = page.network_view.index_of(name)
    tree.scrollTo(index)
    rect = tree.visualRect(index)
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_network_view_lists_every_tensor_of_the_tiny_model(page, tiny_vgg):
    assert page.network_view.tensor_names() == [info.name for info in catalogue(tiny_vgg)]
    assert page.network_view.tensor_names()[:2] == ["input_layer:0", "block1_conv1:0"]
    # The default cut (no cut in the recipe) is the model's last tensor, marked in the view.
    assert page.network_view.cut == "block3_pool:0"
    assert page.network_view.role_of("block3_pool:0").startswith("✂ cut")
    assert page.network_view.role_of("block1_conv1:0") == "frozen"


def test_clicking_a_row_sets_the_cut_tensor(qtbot, page, state):
    with qtbot.waitSignal(state.cut_changed):
        _click_row(qtbot, page, "block2_pool:0")
    assert state.recipe.cut_tensor == "block2_pool:0"
    assert page.network_view.role_of("block3_conv1:0") == "not used (past the cut)"
    assert "8 × 8 × 8" in page.cut_details.text()
    assert page.field_view.receptive_field == 16


def test_the_input_row_cannot_be_chosen_and_says_why(qtbot, page, state):
    _click_row(qtbot, page, "input_layer:0")
    assert state.recipe.cut_tensor is None
    item = page.network_view.model.itemFromIndex(page.network_view.index_of("input_layer:0"))
    assert "cannot be the cut tensor" in item.toolTip()


def test_typing_a_tensor_name_sets_the_cut(qtbot, page, state):
    page.cut_edit.clear()
    qtbot.keyClicks(page.cut_edit, "block2_conv1:0")
    with qtbot.waitSignal(state.cut_changed):
        qtbot.keyClick(page.cut_edit, Qt.Key.Key_Return)
    assert state.recipe.cut_tensor == "block2_conv1:0"
    assert "✔" in page.cut_message.text()


def test_an_operation_name_shows_the_engines_message_and_offers_the_tensor(qtbot, page, state):
    page.cut_edit.clear()
    qtbot.keyClicks(page.cut_edit, "block2_pool")
    qtbot.keyClick(page.cut_edit, Qt.Key.Key_Return)
    assert state.recipe.cut_tensor is None
    message = page.cut_message.text()
    assert "names an operation" in message and "block2_pool:0" in message
    buttons = page.suggestion_buttons()
    assert [b.property("tensor") for b in buttons] == ["block2_pool:0"]
    with qtbot.waitSignal(state.cut_changed):
        qtbot.mouseClick(buttons[0], Qt.MouseButton.LeftButton)
    assert state.recipe.cut_tensor == "block2_pool:0"


def test_a_typo_is_validated_while_typing(qtbot, page):
    page.cut_edit.clear()
    qtbot.keyClicks(page.cut_edit, "blok2_pool:0")
    qtbot.waitUntil(lambda: "Did you mean" in page.cut_message.text())
    assert "block2_pool:0" in [b.property("tensor") for b in page.suggestion_buttons()]


def test_batch_norm_toggle_changes_the_built_model(qtbot, page, state):
    with qtbot.waitSignal(page.summary_ready, timeout=30_000):
        state.update("head", hidden_units=(16,))
    assert page.batch_norm_check.isChecked()
    model = page.summary.model
    names = [layer.name for layer in model.layers]
    assert "head_bn" in names and "head_bn_1" in names
    assert model.get_layer("head_dense_1").use_bias is False
    with_bn = page.summary.trainable

    with qtbot.waitSignal(page.summary_ready, timeout=30_000):
        page.batch_norm_check.click()
    assert state.recipe.head.batch_norm is False
    model = page.summary.model
    assert not [layer for layer in model.layers if "bn" in layer.name]
    assert model.get_layer("head_dense_1").use_bias is True
    assert page.summary.trainable != with_bn
    assert "no bias" not in page.summary_label.text()


def test_fine_tune_depth_colours_the_layers_and_leaves_the_base_untouched(qtbot, page, state, tiny_vgg):
    with qtbot.waitSignal(page.summary_ready, timeout=30_000):
        state.update("training", fine_tune_epochs=2, fine_tune_layers=2)
    assert page.summary.fine_tuned_layers == ("block3_conv2", "block3_conv3")
    assert page.network_view.role_of("block3_conv3:0") == "fine-tuned"
    assert page.network_view.role_of("block3_conv1:0") == "frozen"
    assert all(layer.trainable for layer in tiny_vgg.layers)


def test_offline_download_shows_the_engines_message(qtbot, page, state, monkeypatch):
    def offline(wf, **kwargs):
        raise WeightsError(f"Cannot download {wf.filename} ({wf.size_text}): no network. Import it instead.")

    monkeypatch.setattr(backbones, "resolve_weights", offline)
    monkeypatch.setattr(backbones, "weights_status", lambda base, top: ("missing", None))
    state.update("base", name="vgg16", weights="imagenet")
    panel = page.base_panel
    assert panel.download_button.isVisibleTo(page)
    assert panel.offline_button.isVisibleTo(page)
    assert "58.9 MB" in panel.weights_status.text()
    panel.download_button.click()
    qtbot.waitUntil(lambda: panel.weights_message.isVisibleTo(page) and panel.weights_job is None, timeout=10_000)
    assert "no network. Import it instead." in panel.weights_message.text()
    assert "Traceback" not in panel.weights_message.text()


def test_hidden_units_field_reads_each_number_as_a_layer(qtbot, page, state):
    page.head_form.hidden_edit.setText("256 128")
    page.head_form.hidden_edit.editingFinished.emit()
    assert state.recipe.head.hidden_units == (256, 128)
    assert not page.head_form.hidden_message.isVisibleTo(page)
    page.head_form.hidden_edit.setText("12, x")
    page.head_form.hidden_edit.editingFinished.emit()
    assert state.recipe.head.hidden_units == (256, 128)
    assert page.head_form.hidden_message.isVisibleTo(page) and "whole numbers" in page.head_form.hidden_message.text()


def test_choosing_another_network_resets_weights_and_cut_and_says_so(qtbot, page, state):
    state.update("base", weights="none")
    state.update(cut_tensor="block2_pool:0")
    lite0 = page.base_panel.base_combo.findText("EfficientNet-Lite0 (offline)")
    page.base_panel.base_combo.activated.emit(lite0)
    assert state.recipe.base.name == "efficientnet-lite0"
    assert state.recipe.base.weights == "imagenet"
    assert state.recipe.cut_tensor is None
    assert state.base_model is None
    message = page.base_panel.weights_message.text()
    assert "weights set to ImageNet" in message and "block2_pool:0 replaced by the network's default" in message


def test_an_unknown_cut_offers_the_models_default_first(qtbot, page):
    page.cut_edit.clear()
    qtbot.keyClicks(page.cut_edit, "top_activation:0")
    qtbot.keyClick(page.cut_edit, Qt.Key.Key_Return)
    assert [b.property("tensor") for b in page.suggestion_buttons()][0] == "block3_pool:0"


def test_random_weights_say_only_the_head_learns(page, state):
    state.update("base", weights="none")
    text = page.base_panel.weights_status.text()
    assert "random, untrained features" in text and "only the head learns" in text
    assert "from scratch" in text and "fine-tuning all layers" in text


def test_a_new_project_without_vgg_weights_starts_on_lite0_unchanged(qtbot, monkeypatch):
    real = backbones.weights_status
    monkeypatch.setattr(backbones, "weights_status",
                        lambda base, top: ("missing", None) if base in backbones.VGG_BASES else real(base, top))
    state = ProjectState()
    page = ModelPage(state)
    qtbot.addWidget(page)
    assert state.recipe.base.name == "efficientnet-lite0"
    assert not state.dirty
    assert page.base_panel.base_combo.currentText() == "EfficientNet-Lite0 (offline)"


def test_the_base_model_loads_by_itself_once_images_are_in(qtbot, tiny_vgg, image_root, monkeypatch):
    from tlstudio.core.data.dataset import scan_dataset

    monkeypatch.setattr(backbones, "build_base", lambda spec, on_event, should_stop: tiny_vgg)
    state = ProjectState()
    state.update("base", name="efficientnet-lite0", input_size=32)
    state.set_tensorflow_ready(True)
    page = ModelPage(state)
    qtbot.addWidget(page)
    assert state.base_model is None
    with qtbot.waitSignal(state.base_model_changed, timeout=30_000):
        state.set_dataset(scan_dataset([image_root]))
    assert state.base_model is tiny_vgg
    assert not page.maybe_load_base()


def test_the_cut_row_is_scrolled_into_view_and_the_columns_fit(qtbot, page, state):
    page.resize(1280, 820)
    view = page.network_view
    tree = view.tree
    state.update(cut_tensor="block1_pool:0")
    qtbot.waitUntil(lambda: tree.viewport().rect().intersects(tree.visualRect(view.index_of("block1_pool:0"))))
    qtbot.waitUntil(lambda: tree.header().length() <= tree.viewport().width())
    assert not tree.isColumnHidden(4)  # the receptive field stays in sight
    tip = view.model.itemFromIndex(view.index_of("block2_conv1:0")).toolTip()
    assert "Training: not used (past the cut)" in tip


def test_before_loading_the_page_explains_the_choices(qtbot):
    page = ModelPage(ProjectState())
    qtbot.addWidget(page)
    page.show()
    intro = page.cut_panel.placeholder
    assert intro.isVisible() and not page.network_view.isVisible()
    assert "Base model" in intro.text() and "Cut tensor" in intro.text() and "Head" in intro.text()
