"""The cut comparison dialog: default choices, one row and one bar per tensor, and using the best cut."""

from __future__ import annotations

import pytest

from tlstudio.core.data.dataset import scan_dataset
from tlstudio.gui import workers
from tlstudio.gui.cut_comparison_dialog import CutComparisonDialog
from tlstudio.gui.pages.model_page import ModelPage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def state(image_root, tiny_vgg):
    state = ProjectState()
    state.update("base", input_size=32)
    state.set_dataset(scan_dataset([image_root]))
    state.set_base_model(tiny_vgg)
    state.set_tensorflow_ready(True)
    return state


@pytest.fixture
def dialog(qtbot, state):
    dialog = CutComparisonDialog(state)
    qtbot.addWidget(dialog)
    yield dialog
    assert workers.stop_all(60_000)


def test_each_blocks_pool_is_ticked_by_default(dialog):
    assert dialog.checked_tensors() == ["block1_pool:0", "block2_pool:0", "block3_pool:0"]


def test_comparison_returns_one_row_per_tensor(qtbot, dialog, state):
    dialog.set_checked(["block1_conv2:0", "block2_pool:0", "block3_pool:0"])
    with qtbot.waitSignal(dialog.compared, timeout=120_000) as compared:
        dialog.compare_button.click()
    results = compared.args[0]
    assert [r.tensor for r in results] == ["block1_conv2:0", "block2_pool:0", "block3_pool:0"]
    assert dialog.table.rowCount() == 3
    assert [dialog.table.item(row, 0).text() for row in range(3)] == [r.tensor for r in results]
    assert [dialog.table.item(row, 1).text() for row in range(3)] == ["4", "8", "8"]
    assert dialog.bar_values() == pytest.approx([r.val_accuracy for r in results])
    qtbot.waitUntil(lambda: dialog.job is None)
    best = max(results, key=lambda r: r.val_accuracy)
    assert dialog.use_button.isEnabled()
    dialog.use_button.click()
    assert state.recipe.cut_tensor == best.tensor


def test_the_model_page_opens_the_dialog_once_it_has_a_model_and_data(qtbot, state):
    page = ModelPage(state)
    qtbot.addWidget(page)
    assert page.compare_button.isEnabled()
    dialog = page.compare_cuts()
    assert isinstance(dialog, CutComparisonDialog) and dialog.isVisible()
    dialog.close()
    state.set_base_model(None)
    assert not page.compare_button.isEnabled()
    assert workers.stop_all(60_000)
