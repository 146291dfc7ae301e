"""The Evaluate page: how the trained model does on the validation images.

When a training ends (or a run folder is opened), a worker loads the run's
saved model, predicts every validation image of the dataset and sends back
the true and predicted labels. The page then shows the accuracy, a table of
per-class precision and recall and a confusion-matrix heat map, all computed
with :mod:`tlstudio.core.metrics`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.errors import Cancelled, DataError
from tlstudio.core.events import Progress
from tlstudio.core.metrics import accuracy, confusion_matrix, per_class_precision_recall
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.confusion_matrix import ConfusionMatrixView


@dataclass(frozen=True)
class Predictions:
    """True and predicted labels of a run's validation images."""

    run_dir: Path
    classes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray


def predict_validation(run_dir, dataset, on_event, should_stop) -> Predictions:
    """Load a run's model and predict every validation image (in a worker thread).

    The project's dataset is used when its classes are the run's; otherwise the
    run's own recipe says which folders to scan.
    """
    from tlstudio.core import pipeline, runs
    from tlstudio.core.dataset import scan_data_spec

    run = runs.load_run(run_dir)
    if dataset is None or tuple(dataset.classes) != tuple(run.classes):
        dataset = scan_data_spec(run.recipe.data, on_event=on_event, should_stop=should_stop)
    if tuple(dataset.classes) != tuple(run.classes):
        raise DataError(
            f"The images now in the run's folders have the classes {list(dataset.classes)}, but the run was "
            f"trained on {list(run.classes)}. Evaluate it on the folders it was trained on."
        )
    items = dataset.val
    if not items:
        raise DataError("The dataset has no validation images to evaluate on. Set a validation fraction above 0 "
                        "on the Data page, or add a val/ folder.")
    model = run.load_model()
    spec = run.recipe
    batches = pipeline.image_batches(
        items, len(run.classes), spec.base.input_size, spec.training.batch_size, shuffle=False
    )
    true: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    done = 0
    on_event(Progress("evaluate", 0, len(items), "predicting the validation images"))
    for images, labels in batches:
        if should_stop():
            raise Cancelled("Evaluation was cancelled.")
        probabilities = np.asarray(model(images, training=False))
        true.append(np.asarray(labels))
        predicted.append(probabilities.argmax(axis=1))
        done += len(labels)
        on_event(Progress("evaluate", done, len(items), "predicting the validation images"))
    return Predictions(Path(run_dir), tuple(run.classes), np.concatenate(true), np.concatenate(predicted))


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


class EvaluatePage(QWidget):
    """Accuracy, per-class precision and recall and the confusion matrix of the last run."""

    evaluated = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.job: workers.WorkerHandle | None = None
        self.predictions: Predictions | None = None
        self.matrix: np.ndarray | None = None
        self._run_dir: Path | None = None

        self.run_label = QLabel("No run yet: train a model on the Train page, or open a run folder.")
        self.run_label.setWordWrap(True)
        self.open_button = QPushButton("Open run folder…")
        self.open_button.setToolTip("Evaluate an earlier run (a folder written by training, with model.keras).")
        self.open_button.clicked.connect(self._choose_run)
        self.evaluate_button = QPushButton("Evaluate again")
        self.evaluate_button.clicked.connect(lambda: self.evaluate(self._run_dir) if self._run_dir else None)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.accuracy_label = QLabel("—")
        self.accuracy_label.setObjectName("accuracy")
        font = self.accuracy_label.font()
        font.setPointSizeF(font.pointSizeF() * 2.0)
        font.setBold(True)
        self.accuracy_label.setFont(font)
        self.accuracy_caption = QLabel("validation accuracy")
        self.accuracy_caption.setToolTip("The share of validation images (never trained on) classified correctly.")

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Class", "Images", "Precision", "Recall"])
        tips = (
            "The class (a folder of images).",
            "Validation images of this class.",
            "Of the images the model called this class, the share that really are: low precision means "
            "other classes get mistaken for this one.",
            "Of the images of this class, the share the model found: low recall means this class gets "
            "mistaken for others.",
        )
        for column, tip in enumerate(tips):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2, 3):
            self.table.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.matrix_view = ConfusionMatrixView()

        header = QHBoxLayout()
        header.addWidget(self.run_label, 1)
        header.addWidget(self.open_button)
        header.addWidget(self.evaluate_button)
        score = QHBoxLayout()
        score.addWidget(self.accuracy_label)
        score.addWidget(self.accuracy_caption)
        score.addStretch(1)
        score.addWidget(self.progress)
        left = QWidget()
        left_column = QVBoxLayout(left)
        left_column.setContentsMargins(0, 0, 0, 0)
        left_column.addLayout(score)
        left_column.addWidget(QLabel("<b>Per class</b>"))
        left_column.addWidget(self.table, 1)
        right = QWidget()
        right_column = QVBoxLayout(right)
        right_column.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>Confusion matrix</b> — rows: true class, columns: predicted class")
        title.setWordWrap(True)
        right_column.addWidget(title)
        right_column.addWidget(self.matrix_view, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([420, 620])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addWidget(splitter, 1)
        self.evaluate_button.setEnabled(False)

        state.run_finished.connect(self._on_run_finished)
        if state.last_run is not None:
            self._on_run_finished(state.last_run)

    def _on_run_finished(self, result) -> None:
        if result is not None:
            self.evaluate(result.run_dir)

    def _choose_run(self) -> None:
        from tlstudio.core.paths import runs_dir

        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", str(runs_dir()))
        if folder:
            self.evaluate(folder)

    def evaluate(self, run_dir) -> None:
        """Predict the validation images with the run's model, in a worker, then show the metrics."""
        if self.job is not None:
            self.job.stop()
        self._run_dir = Path(run_dir)
        self.run_label.setText(f"Run <b>{html.escape(self._run_dir.name)}</b> — predicting the validation images…")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.evaluate_button.setEnabled(False)
        self.state.busy.emit("Evaluating…")
        job = workers.run_in_thread(
            predict_validation, self._run_dir, self.state.dataset,
            on_event=self._on_event, on_done=self._on_done, on_error=self._on_error, name="evaluation",
        )
        job.finished.connect(lambda j=job: self._on_finished(j))
        self.job = job

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)

    def _on_done(self, predictions: Predictions) -> None:
        self.show_predictions(predictions)

    def _on_error(self, error: BaseException) -> None:
        self.run_label.setText(f"Could not evaluate {html.escape(str(self._run_dir))}.")
        self.state.error.emit(error)

    def _on_finished(self, job: workers.WorkerHandle) -> None:
        if self.job is job:
            self.job = None
            self.progress.setVisible(False)
            self.evaluate_button.setEnabled(self._run_dir is not None)
            self.state.busy.emit("")

    def show_predictions(self, predictions: Predictions) -> None:
        """Compute and show the metrics of a set of predictions."""
        classes = predictions.classes
        matrix = confusion_matrix(predictions.y_true, predictions.y_pred, len(classes))
        precision, recall = per_class_precision_recall(matrix)
        self.predictions = predictions
        self.matrix = matrix
        total = int(matrix.sum())
        self.accuracy_label.setText(_percent(accuracy(matrix)))
        self.accuracy_caption.setText(f"validation accuracy ({int(np.trace(matrix))} of {total} images correct)")
        self.run_label.setText(
            f"Run <b>{html.escape(predictions.run_dir.name)}</b> — {len(classes)} classes, "
            f"{total} validation images. <span style='color:gray'>{html.escape(str(predictions.run_dir))}</span>"
        )
        self.table.setRowCount(len(classes))
        for row, name in enumerate(classes):
            cells = (name, str(int(matrix[row].sum())), _percent(precision[row]), _percent(recall[row]))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.matrix_view.set_matrix(matrix, classes)
        self.evaluated.emit(predictions)


def _demo() -> None:
    """The page with made-up predictions (no model needed)."""
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    page = EvaluatePage(ProjectState())
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 120)
    y_pred = np.where(rng.random(120) < 0.8, y_true, rng.integers(0, 4, 120))
    page.show_predictions(Predictions(Path("runs/run-demo"), ("cats", "dogs", "foxes", "wolves"), y_true, y_pred))
    page.resize(1100, 600)
    page.setWindowTitle("Evaluate page — made-up predictions (demo)")
    page.show()
    if "--screenshot" in sys.argv:
        app.processEvents()
        page.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()


if __name__ == "__main__":
    _demo()
