"""The network view folds EfficientNet-Lite0's residual branches and marks where they join."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tlstudio.core.model.backbones import build_base
from tlstudio.core.model.tensors import catalogue
from tlstudio.core.spec.recipe import BaseSpec
from tlstudio.gui.widgets.network_view import COLUMNS, NetworkView, _vgg16_catalogue


@pytest.fixture(scope="module")
def lite0_infos():
    return catalogue(build_base(BaseSpec(name="efficientnet-lite0", input_size=64)))


@pytest.fixture
def view(qtbot, lite0_infos):
    widget = NetworkView()
    qtbot.addWidget(widget)
    widget.resize(760, 600)
    widget.set_catalogue(lite0_infos)
    widget.set_cut("top_activation:0")
    widget.show()
    return widget


def _text(view, index, column=0):
    return index.siblingAtColumn(column).data()


def _visible_rows(tree):
    rows, index = [], tree.model().index(0, 0)
    while index.isValid():
        rows.append(index)
        index = tree.indexBelow(index)
    return rows


def test_each_residual_block_is_one_folded_row_followed_by_its_join(view):
    tree = view.tree
    unit = view.unit_index("block3b_add:0")
    assert _text(view, unit) == "block3b + skip (add)"
    assert _text(view, unit, COLUMNS.index("Type")) == "8 layers"
    assert not tree.isExpanded(unit), "the branch's layers are folded away"
    assert view.model.rowCount(unit) == 8
    assert _text(view, view.model.index(0, 0, unit)) == "block3b_expand_conv:0"
    join = view.index_of("block3b_add:0")
    assert join.parent() == unit.parent() and join.row() == unit.row() + 1, "the join follows its block"
    assert _text(view, join) == "⊕ block3b_add:0"
    assert "Join: block3b's branch and the skip connection meet here" in view.model.itemFromIndex(join).toolTip()
    assert view.model.itemFromIndex(unit).toolTip().startswith("block3b: 8 layers + skip (add).\nA residual block")
    assert "cannot be the cut" in view.model.itemFromIndex(unit).toolTip()
    assert len(view.branch_units()) == 9
    shown = [_text(view, index) for index in _visible_rows(tree)]
    assert len(shown) < 100 and "block3b_dwconv:0" not in shown and "⊕ block6d_add:0" in shown
    assert view.join_label.isVisible()


def test_rows_inside_a_branch_cannot_be_chosen_but_the_join_can(qtbot, view):
    unit = view.unit_index("block4b_add:0")
    assert not view.model.itemFromIndex(unit).isSelectable()
    view.tree.expand(unit)
    inside = view.model.itemFromIndex(view.index_of("block4b_dwconv:0"))
    assert not inside.isSelectable() and "inside a residual branch" in inside.toolTip()
    with qtbot.waitSignal(view.cut_selected) as picked:
        view.tree.setCurrentIndex(view.index_of("block4b_add:0"))
    assert picked.args == ["block4b_add:0"]


def test_units_past_the_cut_are_dimmed_and_the_cut_join_is_marked(view):
    view.set_cut("block3b_add:0")
    assert _text(view, view.index_of("block3b_add:0")) == "✂ block3b_add:0"
    assert view.role_of("block3b_add:0").startswith("✂ cut")
    before = view.model.itemFromIndex(view.unit_index("block3b_add:0"))
    after = view.model.itemFromIndex(view.unit_index("block4b_add:0"))
    assert not before.font().italic() and after.font().italic()
    assert view.role_of("block4b_add:0") == "not used (past the cut)"


def test_a_cut_inside_a_folded_block_unfolds_it(qtbot, view):
    view.set_cut("block5b_dwconv:0")
    qtbot.waitUntil(lambda: view.tree.isExpanded(view.unit_index("block5b_add:0")))


def test_the_cut_row_stays_in_view_while_the_model_page_fills_in(qtbot, lite0_infos):
    from tlstudio.gui.pages.model_page import ModelPage
    from tlstudio.gui.state import ProjectState

    state = ProjectState()
    state.update("base", name="efficientnet-lite0", input_size=64)
    page = ModelPage(state)
    qtbot.addWidget(page)
    page.resize(1130, 800)
    page.show()
    with qtbot.waitSignal(page.summary_ready, timeout=60_000):
        state.set_base_model(build_base(BaseSpec(name="efficientnet-lite0", input_size=64)))
    view = page.network_view
    tree = view.tree
    assert view.cut == "top_activation:0"

    def cut_in_view():
        return tree.viewport().rect().contains(tree.visualRect(view.index_of(view.cut)))

    qtbot.wait(2_000)  # the page lays itself out around the new model
    assert cut_in_view()
    tree.verticalScrollBar().triggerAction(tree.verticalScrollBar().SliderAction.SliderToMinimum)
    page.resize(1130, 760)
    qtbot.wait(50)
    assert not cut_in_view(), "after the user scrolls away, a resize leaves the view where the user put it"


def test_vgg_has_no_folded_rows_and_no_join_legend(qtbot):
    widget = NetworkView()
    qtbot.addWidget(widget)
    widget.set_catalogue(_vgg16_catalogue())
    widget.show()
    assert widget.branch_units() == [] and not widget.join_label.isVisible()
    group = widget.index_of("block1_conv1:0").parent()
    assert _text(widget, group) == "block1" and _text(widget, group, 1) == "3 layers"
    assert widget.model.itemFromIndex(group).toolTip().startswith("VGG block 1")
    assert widget.model.itemFromIndex(group).flags() & Qt.ItemFlag.ItemIsSelectable == Qt.ItemFlag.NoItemFlags


def test_receptive_field_words_read_right(view):
    from types import SimpleNamespace

    from tlstudio.gui.widgets.cut_details import field_caption

    caption = field_caption(SimpleNamespace(receptive_field=851, jump=32), 128)
    assert caption.startswith("Receptive field: each value is computed from an 851 × 851-pixel patch")
    assert "a 3 × 3-pixel" in field_caption(SimpleNamespace(receptive_field=3, jump=1), 32)
    tip = view.model.itemFromIndex(view.index_of("block4a_dwconv:0")).toolTip()
    assert "Each value sees an 83×83-pixel patch" in tip
    assert "Each value sees a 3×3-pixel patch" in view.model.itemFromIndex(view.index_of("stem_conv:0")).toolTip()
