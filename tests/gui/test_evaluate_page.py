"""The Evaluate page: confusion-matrix cells, precision and recall, and a real run's predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlstudio.core import training
from tlstudio.core.dataset import scan_dataset
from tlstudio.core.recipe import BaseSpec, Recipe, TrainSpec
from tlstudio.gui import workers
from tlstudio.gui.pages.evaluate_page import EvaluatePage, Predictions
from tlstudio.gui.state import ProjectState


@pytest.fixture
def page(qtbot):
    page = EvaluatePage(ProjectState())
    qtbot.addWidget(page)
    yield page
    assert workers.stop_all(60_000)


def test_confusion_matrix_cells_precision_and_recall(page):
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    page.show_predictions(Predictions(Path("run-x"), ("a", "b", "c"), y_true, y_pred))
    view = page.matrix_view
    cells = [[view.cell_value(r, c) for c in range(3)] for r in range(3)]
    assert cells == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert view.cell_text(2, 2) == "3"
    assert page.accuracy_label.text() == "66.7%"
    rows = [[page.table.item(r, c).text() for c in range(4)] for r in range(3)]
    assert rows == [
        ["a", "3", "66.7%", "66.7%"],
        ["b", "2", "50.0%", "50.0%"],
        ["c", "4", "75.0%", "75.0%"],
    ]


def test_a_class_never_predicted_has_no_precision(page):
    page.show_predictions(Predictions(Path("run-y"), ("a", "b"), np.array([0, 1, 1]), np.array([0, 0, 0])))
    assert page.table.item(1, 2).text() == "—"
    assert page.table.item(1, 3).text() == "0.0%"


def test_evaluates_the_last_run_on_the_validation_images(qtbot, image_root, tiny_vgg):
    dataset = scan_dataset([image_root])
    recipe = Recipe(base=BaseSpec(input_size=32), training=TrainSpec(epochs=1, batch_size=8))
    result = training.train(recipe, dataset=dataset, base_model=tiny_vgg)
    state = ProjectState()
    state.set_dataset(dataset)
    page = EvaluatePage(state)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.evaluated, timeout=120_000) as evaluated:
        state.set_last_run(result)
    predictions = evaluated.args[0]
    assert predictions.classes == dataset.classes
    assert predictions.y_true.tolist() == [item.label for item in dataset.val]
    assert int(page.matrix.sum()) == len(dataset.val)
    correct = int(np.trace(page.matrix))
    assert page.accuracy_label.text() == f"{correct / len(dataset.val):.1%}"
    assert correct / len(dataset.val) == pytest.approx(result.metrics["val_accuracy"], abs=1e-6)
    qtbot.waitUntil(lambda: page.job is None)
