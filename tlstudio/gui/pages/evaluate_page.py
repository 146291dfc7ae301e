"""The Evaluate page: how well a run's model does on images it did not train on, and why it fails.

When a training ends (or a run folder is opened), a worker runs
:func:`tlstudio.core.use.evaluation.evaluate_run` on the chosen split (validation,
or test when the data has a ``test/`` folder) of the project's dataset for the
run just trained, or of the run's folders for another; an evaluation already saved in
the run folder is shown without predicting again. The "Results" tab shows the
accuracy, top-k accuracy, per-class precision, recall and F1, the confusion
matrix (counts or row shares) and the mistakes browser; clicking a matrix cell
lists that cell's images. The "Explain" tab shows Grad-CAM and the feature
maps of any image (double-click one in the mistakes list).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.use import evaluation as core_evaluation
from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.text import counted
from tlstudio.gui import workers
from tlstudio.gui.pages.explain_panel import ExplainPanel
from tlstudio.gui.state import ProjectState
from tlstudio.gui.widgets.confusion_matrix import ConfusionMatrixView
from tlstudio.gui.widgets.mistakes_view import MistakesView

DEFAULT_TOP_K = 3


def evaluation_for(run_dir, split: str, top_k: int, reuse: bool, dataset, on_event, should_stop):
    """The evaluation of a run's split: the one saved in the run folder when ``reuse``, else a new one
    (saved there by the engine) of ``dataset``'s split, or of the run's folders scanned again when
    ``dataset`` is None. Runs in a worker thread."""
    if reuse:
        try:
            saved = core_evaluation.load_evaluations(run_dir).get(split)
        except UserError:
            saved = None
        if saved is not None:
            return saved
    return core_evaluation.evaluate_run(
        run_dir, split=split, top_k=top_k, on_event=on_event, should_stop=should_stop, dataset=dataset
    )


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


class EvaluatePage(QWidget):
    """Metrics, confusion matrix, mistakes and explanations of the last (or an opened) run."""

    evaluated = Signal(object)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.job: workers.WorkerHandle | None = None
        self.evaluation: core_evaluation.Evaluation | None = None
        self._run_dir: Path | None = None

        self.run_label = QLabel("No run yet: train a model on the Train page, or open a run folder.")
        self.run_label.setWordWrap(True)
        self.run_label.setTextFormat(Qt.TextFormat.RichText)
        self.split_combo = QComboBox()
        for split in core_evaluation.SPLITS:
            self.split_combo.addItem(core_evaluation.SPLIT_NAMES[split].capitalize(), split)
        self.split_combo.setToolTip(
            "Which held-out images to measure on: the validation split (used during training to pick the best "
            "epoch) or the test split (a test/ folder beside train/ and val/, never looked at while training)."
        )
        self.split_combo.activated.connect(lambda _index: self._evaluate_current(reuse=True))
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 20)
        self.top_k_spin.setValue(DEFAULT_TOP_K)
        self.top_k_spin.setPrefix("top-")
        self.top_k_spin.setToolTip("Top-k accuracy counts an image as right when its class is among the k most "
                                   "probable ones.")
        self.top_k_spin.valueChanged.connect(self._on_top_k_changed)
        self.open_button = QPushButton("Open run folder…")
        self.open_button.setToolTip("Evaluate an earlier run (a folder written by training, with model.keras).")
        self.open_button.clicked.connect(self._choose_run)
        self.evaluate_button = QPushButton("Evaluate again")
        self.evaluate_button.setToolTip("Predict the split's images again (after adding or fixing images).")
        self.evaluate_button.clicked.connect(lambda: self._evaluate_current(reuse=False))
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.setVisible(False)

        self.accuracy_label = QLabel("—")
        self.accuracy_label.setObjectName("accuracy")
        font = self.accuracy_label.font()
        font.setPointSizeF(font.pointSizeF() * 2.0)
        font.setBold(True)
        self.accuracy_label.setFont(font)
        self.accuracy_caption = QLabel("accuracy")
        self.accuracy_caption.setToolTip("The share of held-out images (never trained on) classified correctly.")
        self.details_label = QLabel()
        self.details_label.setObjectName("evaluationDetails")
        self.details_label.setWordWrap(True)

        self.table = QTableWidget(0, 5)
        self.table.setObjectName("perClassTable")
        self.table.setHorizontalHeaderLabels(["Class", "Images", "Precision", "Recall", "F1"])
        tips = (
            "The class (a folder of images).",
            "Images of this class in the split.",
            "Of the images the model called this class, the share that really are: low precision means "
            "other classes get mistaken for this one.",
            "Of the images of this class, the share the model found: low recall means this class gets "
            "mistaken for others.",
            "The balance of precision and recall (their harmonic mean): one number per class.",
        )
        for column, tip in enumerate(tips):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, 5):
            self.table.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)

        self.matrix_view = ConfusionMatrixView()
        self.normalised_check = QCheckBox("Normalised")
        self.normalised_check.setToolTip("Show each cell as the share of its row (its true class) instead of a count.")
        self.normalised_check.toggled.connect(self.matrix_view.set_normalised)
        self.mistakes = MistakesView()
        self.matrix_view.cell_clicked.connect(self.mistakes.show_cell)
        self.mistakes.records_changed.connect(self._sync_selected_cell)
        self.explain_panel = ExplainPanel(state)
        self.mistakes.explain_requested.connect(self.explain)

        header = QHBoxLayout()
        header.addWidget(self.run_label, 1)
        header.addWidget(QLabel("Split"))
        header.addWidget(self.split_combo)
        header.addWidget(self.top_k_spin)
        header.addWidget(self.progress)
        header.addWidget(self.open_button)
        header.addWidget(self.evaluate_button)
        score = QHBoxLayout()
        score.addWidget(self.accuracy_label)
        score.addWidget(self.accuracy_caption, 1)
        left = QWidget()
        left_column = QVBoxLayout(left)
        left_column.setContentsMargins(0, 0, 0, 0)
        left_column.addLayout(score)
        left_column.addWidget(self.details_label)
        left_column.addWidget(QLabel("<b>Per class</b>"))
        left_column.addWidget(self.table, 1)
        right = QWidget()
        right_column = QVBoxLayout(right)
        right_column.setContentsMargins(0, 0, 0, 0)
        title_row = QHBoxLayout()
        title = QLabel(
            "<b>Confusion matrix</b> — rows: true class, columns: predicted. Click a cell to see its images."
        )
        title.setWordWrap(True)
        title_row.addWidget(title, 1)
        title_row.addWidget(self.normalised_check)
        right_column.addLayout(title_row)
        right_column.addWidget(self.matrix_view, 1)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(left)
        top.addWidget(right)
        top.setSizes([460, 560])
        results = QSplitter(Qt.Orientation.Vertical)
        results.addWidget(top)
        results.addWidget(self.mistakes)
        results.setSizes([380, 300])
        self.tabs = QTabWidget()
        self.tabs.addTab(results, "Results")
        self.tabs.addTab(self.explain_panel, "Explain (Grad-CAM, activations)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addWidget(self.tabs, 1)
        self._update_buttons()

        state.run_finished.connect(self._on_run_finished)
        state.dataset_changed.connect(lambda _dataset: self._update_splits())
        self._update_splits()
        if state.last_run is not None:
            self._on_run_finished(state.last_run)

    # ----- which run and split ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path | None:
        return self._run_dir

    def _on_run_finished(self, result) -> None:
        if result is not None and getattr(result, "run_dir", None) is not None:
            self.evaluate(result.run_dir)

    def _choose_run(self) -> None:
        from tlstudio.core.spec.paths import runs_dir

        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", str(runs_dir()))
        if folder:
            self.evaluate(folder)

    def split(self) -> str:
        return self.split_combo.currentData()

    def _update_splits(self) -> None:
        """Grey out the test split when the project's data is known to have none."""
        dataset = self.state.dataset
        item = self.split_combo.model().item(self.split_combo.findData("test"))
        known_empty = dataset is not None and not dataset.test
        item.setEnabled(not known_empty)
        item.setToolTip("The data has no test/ folder (beside train/ and val/)." if known_empty else "")

    def _evaluate_current(self, reuse: bool) -> None:
        if self._run_dir is not None:
            self.evaluate(self._run_dir, reuse=reuse)

    def evaluate(self, run_dir, reuse: bool = True) -> None:
        """Evaluate the chosen split of a run in a worker (or show the evaluation saved in it), then show it."""
        if self.job is not None:
            self.job.stop()
        self._run_dir = Path(run_dir)
        self.explain_panel.set_source(self._run_dir)
        split_name = core_evaluation.SPLIT_NAMES[self.split()]
        self.run_label.setText(
            f"Run <b>{html.escape(self._run_dir.name)}</b> — predicting the {split_name} images…"
        )
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.state.busy.emit("Evaluating…")
        job = workers.run_in_thread(
            evaluation_for, self._run_dir, self.split(), self.top_k_spin.value(), reuse, self._dataset_for_run(),
            on_event=self._on_event, on_done=self._on_done, on_error=self._on_error, name="evaluation",
            kind=workers.JobKind.EVALUATION,
        )
        job.finished.connect(lambda j=job: self._on_finished(j))
        self.job = job
        self._update_buttons()

    def _dataset_for_run(self):
        """The project's dataset when the run shown is the project's last training, which used it; else None.

        Evaluating it splits the images exactly as training did, and works for
        a dataset that was never a list of folders; another run's images are
        found by scanning the folders its recipe names.
        """
        last = self.state.last_run
        if self.state.dataset is None or last is None or getattr(last, "run_dir", None) is None:
            return None
        return self.state.dataset if Path(last.run_dir) == self._run_dir else None

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.total and event.task == "evaluate":
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)

    def _on_done(self, evaluation: core_evaluation.Evaluation) -> None:
        if evaluation.top_k != min(self.top_k_spin.value(), len(evaluation.classes)):
            evaluation = core_evaluation.with_top_k(evaluation, self.top_k_spin.value())
        self.show_evaluation(evaluation)

    def _on_error(self, error: BaseException) -> None:
        where = html.escape(str(self._run_dir)) if self._run_dir else "the run"
        self.run_label.setText(f"Could not evaluate {where}: {html.escape(str(error).splitlines()[0])}")
        self.state.error.emit(error)

    def _on_finished(self, job: workers.WorkerHandle) -> None:
        if self.job is job:
            self.job = None
            self.progress.setVisible(False)
            self.state.busy.emit("")
            self._update_buttons()

    def _update_buttons(self) -> None:
        self.evaluate_button.setEnabled(self._run_dir is not None and self.job is None)

    def _on_top_k_changed(self, value: int) -> None:
        if self.evaluation is not None:
            self.show_evaluation(core_evaluation.with_top_k(self.evaluation, value))

    # ----- showing ------------------------------------------------------------------------------------------

    def show_evaluation(self, evaluation: core_evaluation.Evaluation) -> None:
        """Show an evaluation's metrics, confusion matrix and mistakes."""
        self.evaluation = evaluation
        classes = evaluation.classes
        matrix = evaluation.confusion_matrix
        split_name = core_evaluation.SPLIT_NAMES.get(evaluation.split, evaluation.split)
        correct = int(matrix.trace())
        with QSignalBlocker(self.split_combo):
            index = self.split_combo.findData(evaluation.split)
            if index >= 0:
                self.split_combo.setCurrentIndex(index)
        self.accuracy_label.setText(_percent(evaluation.accuracy))
        self.accuracy_caption.setText(f"{split_name} accuracy ({correct} of {counted(evaluation.images, 'image')} correct)")
        details = [
            f"Top-{evaluation.top_k} accuracy: <b>{_percent(evaluation.top_k_accuracy)}</b>",
            f"mean loss {evaluation.loss:.3f}" if not math.isnan(evaluation.loss) else "",
        ]
        if evaluation.skipped:
            details.append(f"{counted(len(evaluation.skipped), 'unreadable image')} left out")
        self.details_label.setText(" · ".join(d for d in details if d))
        self.details_label.setToolTip("\n".join(f"{s.path}: {s.reason}" for s in evaluation.skipped))
        run = Path(evaluation.run) if evaluation.run else self._run_dir
        if run is not None:
            self.run_label.setText(
                f"Run <b>{html.escape(run.name)}</b> — {counted(len(classes), 'class')}, "
                f"{counted(evaluation.images, split_name + ' image')}. <span style='color:gray'>{html.escape(str(run))}</span>"
            )
        self.table.setRowCount(len(classes))
        for row, metrics in enumerate(evaluation.per_class):
            cells = (metrics.name, str(metrics.support), _percent(metrics.precision), _percent(metrics.recall),
                     _percent(metrics.f1))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.matrix_view.set_matrix(matrix, classes)
        self.mistakes.set_evaluation(evaluation)
        self.evaluated.emit(evaluation)
        self.state.evaluated.emit(evaluation)

    def _sync_selected_cell(self) -> None:
        self.matrix_view.set_selected_cell(self.mistakes.cell)

    def explain(self, path: str) -> None:
        """Show the Explain tab for one image."""
        self.tabs.setCurrentWidget(self.explain_panel)
        self.explain_panel.set_image(path)


def _demo() -> None:
    """The page with made-up predictions (no model needed)."""
    import numpy as np

    from tlstudio.gui.widgets.demo import demo_app, show_demo

    demo_app()
    page = EvaluatePage(ProjectState())
    rng = np.random.default_rng(0)
    classes = ("cats", "dogs", "foxes", "wolves")
    labels = rng.integers(0, 4, 120)
    logits = rng.normal(0, 1, (120, 4))
    logits[np.arange(120), labels] += 2.2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    paths = [f"images/{classes[label]}/{i:03d}.jpg" for i, label in enumerate(labels)]
    page.show_evaluation(
        core_evaluation.evaluate_probabilities(classes, paths, labels, probabilities, run="runs/run-demo")
    )
    show_demo(page, "Evaluate page — made-up predictions (demo)", (1100, 760))


if __name__ == "__main__":
    _demo()
