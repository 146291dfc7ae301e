"""The Evaluate page: metrics from the engine's evaluation, the split chooser and a real run's evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from tlstudio.core.train import training
from tlstudio.core.data.dataset import scan_dataset
from tlstudio.core.use.evaluation import evaluate_probabilities
from tlstudio.core.spec.recipe import BaseSpec, DataSpec, Recipe, TrainSpec
from tlstudio.gui import workers
from tlstudio.gui.pages.evaluate_page import EvaluatePage
from tlstudio.gui.state import ProjectState


@pytest.fixture
def page(qtbot):
    page = EvaluatePage(ProjectState())
    qtbot.addWidget(page)
    yield page
    assert workers.stop_all(60_000)


def one_hot(predicted, classes, confidence=0.8):
    rest = (1 - confidence) / (classes - 1)
    probabilities = np.full((len(predicted), classes), rest)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_confusion_matrix_cells_precision_recall_and_f1(page):
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    paths = [f"/data/{i}.png" for i in range(9)]
    page.show_evaluation(evaluate_probabilities(("a", "b", "c"), paths, y_true, one_hot(y_pred, 3), top_k=2))
    view = page.matrix_view
    assert [[view.cell_value(r, c) for c in range(3)] for r in range(3)] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert view.cell_text(2, 2) == "3"
    page.normalised_check.setChecked(True)
    assert view.cell_text(2, 2) == "75%"
    assert page.accuracy_label.text() == "66.7%"
    assert "Top-2 accuracy" in page.details_label.text()
    rows = [[page.table.item(r, c).text() for c in range(5)] for r in range(3)]
    assert rows == [
        ["a", "3", "66.7%", "66.7%", "66.7%"],
        ["b", "2", "50.0%", "50.0%", "50.0%"],
        ["c", "4", "75.0%", "75.0%", "75.0%"],
    ]


def test_a_class_never_predicted_has_no_precision(page):
    page.show_evaluation(evaluate_probabilities(("a", "b"), ["x", "y", "z"], [0, 1, 1], one_hot([0, 0, 0], 2)))
    assert page.table.item(1, 2).text() == "—"
    assert page.table.item(1, 3).text() == "0.0%"


def test_top_k_is_measured_again_without_predicting(page):
    probabilities = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    page.top_k_spin.setValue(1)
    page.show_evaluation(evaluate_probabilities(("a", "b", "c"), ["p", "q", "r"], [1, 1, 0], probabilities, top_k=1))
    assert page.evaluation.top_k_accuracy == pytest.approx(1 / 3)
    page.top_k_spin.setValue(2)
    assert page.evaluation.top_k == 2
    assert page.evaluation.top_k_accuracy == pytest.approx(1.0)


def test_evaluates_the_last_run_and_offers_no_test_split_without_one(qtbot, image_root, tiny_vgg):
    dataset = scan_dataset([image_root])
    recipe = Recipe(data=DataSpec(folders=(str(image_root),)), base=BaseSpec(input_size=32),
                    training=TrainSpec(epochs=1, batch_size=8))
    result = training.train(recipe, dataset=dataset, base_model=tiny_vgg)
    state = ProjectState()
    state.set_dataset(dataset)
    page = EvaluatePage(state)
    qtbot.addWidget(page)
    test_item = page.split_combo.model().item(page.split_combo.findData("test"))
    assert not test_item.isEnabled()
    with qtbot.waitSignal(page.evaluated, timeout=120_000) as evaluated:
        state.set_last_run(result)
    evaluation = evaluated.args[0]
    assert evaluation.split == "val" and evaluation.classes == dataset.classes
    assert sorted(r.path for r in evaluation.records) == sorted(item.path for item in dataset.val)
    assert int(page.matrix_view.matrix.sum()) == len(dataset.val)
    assert evaluation.accuracy == pytest.approx(result.metrics["val_accuracy"], abs=1e-6)
    assert (result.run_dir / "evaluation.json").is_file()
    qtbot.waitUntil(lambda: page.job is None)


def test_a_run_trained_on_a_dataset_without_folders_is_evaluated_on_that_dataset(qtbot, image_root, tiny_vgg):
    dataset = scan_dataset([image_root])
    recipe = Recipe(base=BaseSpec(input_size=32), training=TrainSpec(epochs=1, batch_size=8))
    result = training.train(recipe, dataset=dataset, base_model=tiny_vgg)
    state = ProjectState()
    state.set_dataset(dataset)
    page = EvaluatePage(state)
    qtbot.addWidget(page)
    errors = []
    state.error.connect(errors.append)
    state.set_last_run(result)
    qtbot.waitUntil(lambda: page.job is None, timeout=120_000)
    assert errors == []
    assert sorted(r.path for r in page.evaluation.records) == sorted(item.path for item in dataset.val)
