"""*Find the best recipe…*: the recipe search with a live leaderboard, opened from the Model page.

Runs :func:`tlstudio.core.use.tune.tune_recipe` in a worker around the
project's recipe; each finished candidate joins the leaderboard at once, Stop
keeps what was found, and *Use this recipe* puts the selected (by default the
best) candidate's cut, head, learning rate and epochs into the project.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tlstudio.gui.health_panel import _Job
from tlstudio.gui.state import ProjectState

COLUMNS = ("Recipe", "Val accuracy", "Val loss", "Epochs", "Seconds")


class TuneDialog(QDialog):
    """Budget, Start/Stop, the live leaderboard and *Use this recipe*."""

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.trials: list[Any] = []
        self.result: Any = None
        self.setWindowTitle("Find the best recipe")
        self.resize(900, 520)
        self.job = _Job("Search", self)
        self.job.run_button.clicked.connect(self.start)
        self.budget = QSpinBox()
        self.budget.setRange(10, 24 * 3600)
        self.budget.setValue(300)
        self.budget.setSuffix(" s")
        self.budget.setToolTip("The search stops starting new candidates after this long.")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.use_button = QPushButton("Use this recipe")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_selected)
        form = QFormLayout()
        form.addRow("Time budget:", self.budget)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(self.job.controls())
        layout.addWidget(self.job.status)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def start(self) -> None:
        if self.state.base_model is None or self.state.dataset is None:
            self.job.status.setText("Load a base model and add images with a validation split first.")
            return
        from tlstudio.core.use.tune import tune_recipe

        self.trials = []
        self.table.setRowCount(0)
        self.job.start(tune_recipe, self.state.recipe, self.state.base_model, self.state.dataset,
                       float(self.budget.value()), on_done=self._done)
        self.job.job.event.connect(self._event)

    def _event(self, event: object) -> None:
        from tlstudio.core.use.tune import Trial

        if isinstance(event, Trial):
            self.trials = [t for t in self.trials if t.candidate != event.candidate] + [event]
            self._fill(sorted(self.trials, key=lambda t: (-t.val_accuracy, t.val_loss)))

    def _done(self, result: Any) -> None:
        self.result = result
        self._fill(list(result.leaderboard))
        ending = "stopped" if result.stopped else "budget spent" if result.out_of_budget else "finished"
        self.job.status.setText(f"{len(result.leaderboard)} candidates in {result.seconds:.0f} s ({ending}).")

    def _fill(self, trials: list[Any]) -> None:
        self.trials = trials
        self.table.setRowCount(len(trials))
        for row, t in enumerate(trials):
            cells = (t.candidate.summary(), f"{t.val_accuracy:.3f}", f"{t.val_loss:.3f}", str(t.epochs),
                     f"{t.seconds:.1f}")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        if trials:
            self.table.selectRow(0)
        self.use_button.setEnabled(bool(trials))

    def use_selected(self) -> None:
        """Put the selected candidate into the project's recipe."""
        from tlstudio.core.use.tune import TuneResult

        rows = self.table.selectionModel().selectedRows()
        if not self.trials or not rows:
            return
        chosen = self.trials[rows[0].row()]
        self.state.set_recipe(TuneResult((chosen,), False, False, 0.0).recipe(self.state.recipe))
        self.job.status.setText(f"The project now uses: {chosen.candidate.summary()}.")
