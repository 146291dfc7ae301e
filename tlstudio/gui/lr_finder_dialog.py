"""The learning-rate finder, opened from the Train page: the sweep's curve with the suggestion marked.

Runs :func:`tlstudio.core.use.lr_find.find_learning_rate` on the training
images' cached features in a worker; the smoothed loss is drawn against the
learning rate (log axis) and the suggested rate is a vertical line.
*Use this rate* sets the recipe's learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from tlstudio.gui.health_panel import _inputs, _Job
from tlstudio.gui.state import ProjectState


class LrFinderDialog(QDialog):
    """Sweep, see the curve, use the suggested rate."""

    def __init__(self, state: ProjectState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.curve: Any = None
        self.setWindowTitle("Find a learning rate")
        self.resize(760, 480)
        self.job = _Job("Sweep", self)
        self.job.run_button.clicked.connect(self.start)
        self.plot = pg.PlotWidget()
        self.plot.setLogMode(x=True, y=False)
        self.plot.setLabel("bottom", "learning rate")
        self.plot.setLabel("left", "smoothed loss")
        self.line = self.plot.plot([], [], pen=pg.mkPen((31, 119, 180), width=2))
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen((214, 39, 40), width=2))
        self.marker.setVisible(False)
        self.plot.addItem(self.marker)
        self.use_button = QPushButton("Use this rate")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_suggestion)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addLayout(self.job.controls())
        layout.addWidget(self.job.status)
        layout.addWidget(self.plot, 1)
        layout.addLayout(buttons)

    def start(self) -> None:
        if self.state.base_model is None or self.state.dataset is None or not self.state.dataset.train:
            self.job.status.setText("Load a base model and add training images first.")
            return
        base, dataset, size, mode = _inputs(self.state)
        self.job.start(_sweep, base, dataset, self.state.recipe, size, mode, on_done=self.show_curve)

    def show_curve(self, curve: Any) -> None:
        self.curve = curve
        self.line.setData(np.asarray(curve.rates), np.asarray(curve.smoothed))
        self.marker.setValue(math.log10(curve.suggestion))
        self.marker.setVisible(True)
        self.use_button.setEnabled(True)
        self.job.status.setText(f"Suggested learning rate {curve.suggestion:.1e} (valley; steepest descent at "
                                f"{curve.steepest:.1e}).")

    def use_suggestion(self) -> None:
        if self.curve is not None:
            rate = float(f"{self.curve.suggestion:.1e}")
            self.state.update("training", learning_rate=min(1.0, rate))


def _sweep(base: Any, dataset: Any, recipe: Any, size: int, mode: str, on_event: Any, should_stop: Any) -> Any:
    from tlstudio.core.use.health import cut_features
    from tlstudio.core.use.lr_find import find_learning_rate

    items = list(dataset.train)
    _, features = cut_features(base, items, recipe.cut_tensor, size, mode, on_event, should_stop)
    return find_learning_rate(
        features, np.asarray([i.label for i in items]), len(dataset.classes), recipe.head,
        recipe.training.optimizer, recipe.training.batch_size, seed=recipe.data.seed,
        on_event=on_event, should_stop=should_stop,
    )
