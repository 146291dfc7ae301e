"""Compare cut tensors before training: a quick linear classifier on each cut's features.

Opened from the Model page. The user ticks a few cut tensors of the base
(by default the last tensor of each block, e.g. each VGG pool, plus the
default cut); a worker runs :func:`tlstudio.core.use.cut_comparison.compare_cuts`
over the project's training and validation images with progress and Stop.
A horizontal bar chart shows the validation accuracy of each cut and a table
its feature size, accuracies and fitting time; "Use best cut" sets the
recipe's cut tensor to the winner.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.core.spec.events import Message, Progress
from tlstudio.core.spec.text import counted
from tlstudio.gui import workers
from tlstudio.gui.state import ProjectState

BAR_COLOUR = QColor(31, 119, 180)
BEST_COLOUR = QColor(46, 139, 58)
COLUMNS = ("Cut tensor", "Features", "Val accuracy", "Train accuracy", "Fit time")


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


class CutComparisonDialog(QDialog):
    """Tick cut tensors, compare them, pick the best. ``compared(list[CutResult])`` when done."""

    compared = Signal(list)

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.results: list[Any] = []
        self.job: workers.WorkerHandle | None = None
        self.setWindowTitle("Compare cut tensors")
        self.resize(960, 600)

        from tlstudio.core.model.tensors import catalogue, default_cut_tensor
        from tlstudio.core.use.cut_comparison import default_cuts

        model = state.base_model
        self._infos = catalogue(model) if model is not None else []
        default = state.recipe.cut_tensor or (default_cut_tensor(model) if model is not None else None)
        checked = set(default_cuts(self._infos, default))

        intro = QLabel(
            "For each ticked tensor, the base runs once over the training and validation images and a linear "
            "classifier is fitted on its features (averaged over positions). Higher validation accuracy means "
            "the head will have an easier job there: a cheap preview before full training."
        )
        intro.setWordWrap(True)
        self.tensor_list = QListWidget()
        self.tensor_list.setObjectName("cutChoices")
        for info in self._infos:
            if not info.cuttable:
                continue
            dims = " × ".join(str(d) for d in info.shape[1:])
            item = QListWidgetItem(f"{info.name}   {dims}")
            item.setData(Qt.ItemDataRole.UserRole, info.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if info.name in checked else Qt.CheckState.Unchecked)
            self.tensor_list.addItem(item)
        self.tensor_list.itemChanged.connect(lambda _item: self._update_buttons())

        self.chart = pg.PlotWidget()
        self.chart.setObjectName("cutChart")
        self.chart.setMinimumHeight(200)
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.chart.setLabel("bottom", "validation accuracy")
        self.chart.setXRange(0.0, 1.0, padding=0.02)
        self.chart.showGrid(x=True, alpha=0.2)
        self.bars: pg.BarGraphItem | None = None
        self._apply_palette()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("cutTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            self.table.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeaderItem(1).setToolTip("Features per image after averaging over positions.")
        self.table.horizontalHeaderItem(4).setToolTip("Seconds to fit the linear classifier (the shared feature "
                                                      "extraction is not included).")

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setDefault(True)
        self.compare_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.use_button = QPushButton("Use best cut")
        self.use_button.setToolTip("Set the recipe's cut tensor to the one with the highest validation accuracy.")
        self.use_button.clicked.connect(self.use_best)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)

        left = QWidget()
        left_column = QVBoxLayout(left)
        left_column.setContentsMargins(0, 0, 0, 0)
        left_column.addWidget(QLabel("<b>Cut tensors to compare</b>"))
        left_column.addWidget(self.tensor_list, 1)
        right = QWidget()
        right_column = QVBoxLayout(right)
        right_column.setContentsMargins(0, 0, 0, 0)
        right_column.addWidget(self.chart, 3)
        right_column.addWidget(self.table, 2)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([280, 680])
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self._update_buttons()

    # ----- choices ------------------------------------------------------------------------------------------

    def checked_tensors(self) -> list[str]:
        """The ticked tensor names, in layer order."""
        return [
            self.tensor_list.item(row).data(Qt.ItemDataRole.UserRole)
            for row in range(self.tensor_list.count())
            if self.tensor_list.item(row).checkState() == Qt.CheckState.Checked
        ]

    def set_checked(self, names: Iterable[str]) -> None:
        wanted = set(names)
        for row in range(self.tensor_list.count()):
            item = self.tensor_list.item(row)
            state = Qt.CheckState.Checked if item.data(Qt.ItemDataRole.UserRole) in wanted else Qt.CheckState.Unchecked
            item.setCheckState(state)

    def _missing(self) -> str:
        dataset = self.state.dataset
        if self.state.base_model is None:
            return "Load a base model on the Model page first."
        if dataset is None or not dataset.train or not dataset.val:
            return "Add images with a validation split on the Data page first."
        if not self.checked_tensors():
            return "Tick at least one cut tensor."
        return ""

    def _update_buttons(self) -> None:
        running = self.job is not None
        missing = self._missing()
        self.compare_button.setEnabled(not running and not missing)
        self.compare_button.setToolTip(missing)
        self.stop_button.setVisible(running)
        self.use_button.setEnabled(not running and self.best() is not None)
        self.tensor_list.setEnabled(not running)
        if missing and not running and not self.results:
            self.status.setText(missing)

    # ----- work ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Compare the ticked tensors in a worker."""
        if self.job is not None or self._missing():
            return
        from tlstudio.core.model.backbones import preprocessing_mode
        from tlstudio.core.use.cut_comparison import compare_cuts

        model = self.state.base_model
        size = model.inputs[0].shape[1] or self.state.recipe.base.input_size
        dataset = self.state.dataset
        self.status.setText(
            f"Extracting features of {counted(len(dataset.train) + len(dataset.val), 'image')} "
            f"({len(dataset.train)} training, {len(dataset.val)} validation)…"
        )
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.state.busy.emit("Comparing cut tensors…")
        self.job = workers.run_in_thread(
            compare_cuts, model, dataset, self.checked_tensors(), int(size), preprocessing_mode(self.state.recipe.base),
            on_event=self._on_event, on_done=self._on_done, on_error=self._on_error, on_cancel=self._on_cancelled,
            name="cut comparison", kind=workers.JobKind.CUT_COMPARISON,
        )
        self.job.finished.connect(self._on_finished)
        self._update_buttons()

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()

    def _on_event(self, event: object) -> None:
        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)
            self.progress.setFormat(f"{event.message} — %v of %m" if event.message else "%v of %m")
        elif isinstance(event, Message):
            self.status.setText(event.text)

    def _on_done(self, results: list) -> None:
        self.show_results(results)
        self.compared.emit(results)

    def _on_error(self, error: BaseException) -> None:
        self.status.setText(f"<span style='color:#c0392b'>{html.escape(str(error))}</span>")
        self.state.error.emit(error)

    def _on_cancelled(self) -> None:
        self.status.setText("Stopped; nothing was compared.")

    def _on_finished(self) -> None:
        self.job = None
        self.progress.setVisible(False)
        self.state.busy.emit("")
        self._update_buttons()

    def reject(self) -> None:
        self.stop()
        super().reject()

    # ----- results ------------------------------------------------------------------------------------------

    def best(self) -> Any | None:
        """The result with the highest validation accuracy (the earlier tensor on a tie), or None."""
        scored = [r for r in self.results if not math.isnan(r.val_accuracy)]
        return max(scored, key=lambda r: r.val_accuracy, default=None)

    def show_results(self, results: list) -> None:
        """Fill the chart and the table with one row per compared tensor."""
        self.results = list(results)
        best = self.best()
        self.table.setRowCount(len(results))
        for row, result in enumerate(results):
            cells = (
                result.tensor, f"{result.feature_size:,}", _percent(result.val_accuracy),
                _percent(result.train_accuracy), f"{result.seconds:.2f} s",
            )
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if result is best:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        self._draw_chart(results, best)
        if best is not None:
            self.status.setText(
                f"Best: <b>{html.escape(best.tensor)}</b>, {best.val_accuracy:.1%} validation accuracy with a linear "
                f"classifier on {best.feature_size:,} features."
            )
        self._update_buttons()

    def _draw_chart(self, results: list, best: Any | None) -> None:
        if self.bars is not None:
            self.chart.removeItem(self.bars)
        count = len(results)
        # Top to bottom in the order compared: the first tensor gets the highest y.
        ys = [count - 1 - i for i in range(count)]
        widths = [0.0 if math.isnan(r.val_accuracy) else r.val_accuracy for r in results]
        brushes = [pg.mkBrush(BEST_COLOUR if r is best else BAR_COLOUR) for r in results]
        self.bars = pg.BarGraphItem(x0=0, y=ys, height=0.6, width=widths, brushes=brushes)
        self.chart.addItem(self.bars)
        self.chart.getAxis("left").setTicks([[(y, r.tensor) for y, r in zip(ys, results)]])
        self.chart.setYRange(-0.6, max(0, count - 1) + 0.6, padding=0)
        self.chart.setXRange(0.0, 1.0, padding=0.02)

    def bar_values(self) -> list[float]:
        """The bar lengths drawn, in compared order (for tests)."""
        if self.bars is None:
            return []
        return [float(w) for w in self.bars.opts["width"]]

    def use_best(self) -> None:
        """Set the recipe's cut tensor to the best one and close."""
        best = self.best()
        if best is None:
            return
        self.state.update(cut_tensor=best.tensor)
        self.accept()

    def _apply_palette(self) -> None:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        self.chart.setBackground(palette.color(QPalette.ColorRole.Base))
        for side in ("left", "bottom"):
            axis = self.chart.getAxis(side)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
