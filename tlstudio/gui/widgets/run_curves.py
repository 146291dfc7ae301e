"""Loss and accuracy curves of finished runs, drawn over each other to compare them.

Each run's ``history.json`` holds one value per epoch (``loss``, ``accuracy``,
``val_loss``, ``val_accuracy``). Every run gets one colour; training curves
are solid, validation curves dashed, so two runs read at a glance: which
learns faster, which over-fits (validation rising while training falls).

Run ``python -m tlstudio.gui.widgets.run_curves`` to see it with made-up runs.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tlstudio.gui.widgets.plot_palette import apply_palette

RUN_COLOURS = (QColor(31, 119, 180), QColor(230, 120, 20), QColor(46, 139, 58), QColor(140, 80, 190))
CURVES = (("loss", "loss", False), ("val_loss", "loss", True), ("accuracy", "accuracy", False),
          ("val_accuracy", "accuracy", True))
"""(history key, plot, dashed)."""


def _points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Epoch numbers from 1 and the finite values (NaN epochs left out)."""
    xs, ys = [], []
    for epoch, value in enumerate(values, start=1):
        if value is not None and math.isfinite(float(value)):
            xs.append(float(epoch))
            ys.append(float(value))
    return xs, ys


class RunCurves(QWidget):
    """Two plots, loss and accuracy per epoch, with the curves of a few runs."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._canvas = pg.GraphicsLayoutWidget()
        self._canvas.setMinimumHeight(200)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._canvas)
        self.loss_plot = self._canvas.addPlot(row=0, col=0, title="Loss")
        self.accuracy_plot = self._canvas.addPlot(row=0, col=1, title="Accuracy")
        for plot in self.plots:
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "epoch")
            plot.setMouseEnabled(x=True, y=False)
        self.accuracy_plot.setYRange(0.0, 1.0)
        self.legend = self.accuracy_plot.addLegend(offset=(-10, -10))
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self._apply_palette()
        self.setToolTip("Solid: training images. Dashed: validation images. One colour per run.")

    @property
    def plots(self) -> tuple[pg.PlotItem, pg.PlotItem]:
        return (self.loss_plot, self.accuracy_plot)

    def set_runs(self, runs: Sequence[tuple[str, dict]]) -> None:
        """Show the curves of these (name, history) runs, replacing what was shown."""
        for plot in self.plots:
            for item in list(plot.listDataItems()):
                plot.removeItem(item)
        self.legend.clear()
        self.curves = {}
        for number, (name, history) in enumerate(runs):
            colour = RUN_COLOURS[number % len(RUN_COLOURS)]
            for key, where, dashed in CURVES:
                xs, ys = _points(history.get(key, ()))
                if not xs:
                    continue
                style = Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine
                plot = self.loss_plot if where == "loss" else self.accuracy_plot
                label = name if key == "accuracy" else None
                curve = plot.plot(
                    xs, ys, pen=pg.mkPen(colour, width=2, style=style), symbol="s" if dashed else "o",
                    symbolSize=6, symbolBrush=colour, symbolPen=colour, name=label,
                )
                self.curves[(name, key)] = curve
        self._apply_palette()

    def point_count(self, name: str, key: str) -> int:
        """How many points the curve of run ``name``, history ``key`` shows (0 when none)."""
        curve = self.curves.get((name, key))
        if curve is None:
            return 0
        xs, _ = curve.getData()
        return 0 if xs is None else len(xs)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def _apply_palette(self) -> None:
        palette = self.palette()
        apply_palette(self._canvas, self.plots, palette)  # the legend too: it belongs to the accuracy plot
        backing = QColor(palette.color(QPalette.ColorRole.Base))
        backing.setAlpha(210)
        self.legend.setBrush(pg.mkBrush(backing))


def _demo() -> None:
    from tlstudio.gui.widgets.demo import demo_app, show_demo

    demo_app()
    widget = RunCurves()
    epochs = range(1, 11)
    widget.set_runs([
        ("run-a", {"loss": [1.2 * math.exp(-0.4 * e) + 0.1 for e in epochs],
                   "val_loss": [1.2 * math.exp(-0.3 * e) + 0.2 for e in epochs],
                   "accuracy": [1 - 0.6 * math.exp(-0.4 * e) for e in epochs],
                   "val_accuracy": [0.95 - 0.6 * math.exp(-0.3 * e) for e in epochs]}),
        ("run-b", {"loss": [1.0 * math.exp(-0.7 * e) + 0.05 for e in epochs],
                   "val_loss": [0.3 + 0.02 * (e - 4) ** 2 for e in epochs],
                   "accuracy": [1 - 0.5 * math.exp(-0.7 * e) for e in epochs],
                   "val_accuracy": [0.85 - 0.004 * (e - 4) ** 2 for e in epochs]}),
    ])
    show_demo(widget, "Run curves — demo", (900, 380))


if __name__ == "__main__":
    _demo()
