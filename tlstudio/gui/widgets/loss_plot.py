"""Live training curves: loss, accuracy and learning rate, fed by training events.

The widget takes the engine's events (``PhaseStarted``, ``BatchEnded``,
``EpochEnded``) as they arrive, stores the numbers and redraws at most ten
times a second: each curve is created once and updated with ``setData``, so a
run with thousands of batches keeps the window responsive.

The x axis counts epochs across the whole run, so per-batch points land
between the epoch ticks and a fine-tuning phase continues where the head
phase stopped, marked by a vertical line.

Run ``python -m tlstudio.gui.widgets.loss_plot`` to watch it play a made-up run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tlstudio.core.events import BatchEnded, EpochEnded, PhaseStarted

REDRAW_INTERVAL_MS = 100
SMOOTHING = 0.9

TRAIN_COLOUR = QColor(31, 119, 180)
VAL_COLOUR = QColor(230, 120, 20)
LR_COLOUR = QColor(140, 80, 190)
FINE_TUNE_COLOUR = QColor(40, 160, 80)


@dataclass
class _Series:
    """The x and y values of one curve."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def append(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)

    def clear(self) -> None:
        self.x.clear()
        self.y.clear()


class _ScientificAxis(pg.AxisItem):
    """Tick labels like ``1e-03`` for small values such as learning rates."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        return [f"{value * scale:.1e}" if value else "0" for value in values]


def _metric(metrics: dict[str, float], *names: str) -> float | None:
    """The first of ``names`` present in ``metrics`` as a finite float, else None."""
    for name in names:
        value = metrics.get(name)
        if value is not None and math.isfinite(float(value)):
            return float(value)
    return None


class LossPlot(QWidget):
    """Three plots: loss (per batch and per epoch), accuracy, learning rate.

    ``curves`` maps a curve's name to its ``PlotDataItem``: ``batch_loss``
    (raw, faint), ``batch_loss_smooth`` (exponential moving average),
    ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy`` and
    ``learning_rate``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series = {name: _Series() for name in (
            "batch_loss", "batch_loss_smooth", "train_loss", "val_loss",
            "train_accuracy", "val_accuracy", "learning_rate",
        )}
        self._ema: float | None = None
        self._ema_count = 0
        self._epochs_done = 0
        self._steps_per_epoch = 1
        self._dirty = False
        self._fine_tune_at: float | None = None

        self._canvas = pg.GraphicsLayoutWidget()
        self._canvas.setMinimumHeight(260)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._canvas)

        self.loss_plot = self._canvas.addPlot(row=0, col=0, colspan=2, title="Loss")
        self.accuracy_plot = self._canvas.addPlot(row=1, col=0, title="Accuracy")
        self.lr_plot = self._canvas.addPlot(
            row=1, col=1, title="Learning rate", axisItems={"left": _ScientificAxis("left")}
        )
        self._canvas.ci.layout.setRowStretchFactor(0, 3)
        self._canvas.ci.layout.setRowStretchFactor(1, 2)
        for plot in self.plots:
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "epoch")
            plot.setMouseEnabled(x=True, y=False)
        self.accuracy_plot.setYRange(0.0, 1.0)
        lr_axis = self.lr_plot.getAxis("left")
        lr_axis.enableAutoSIPrefix(False)
        lr_axis.setWidth(62)

        self.loss_plot.addLegend(offset=(-10, 10))
        self.accuracy_plot.addLegend(offset=(-10, -10))
        faint = QColor(TRAIN_COLOUR)
        faint.setAlpha(70)
        self.curves: dict[str, pg.PlotDataItem] = {
            "batch_loss": self.loss_plot.plot(pen=pg.mkPen(faint, width=1), name="batch loss"),
            "batch_loss_smooth": self.loss_plot.plot(
                pen=pg.mkPen(TRAIN_COLOUR, width=2), name="batch loss (smoothed)"
            ),
            "train_loss": self._epoch_curve(self.loss_plot, TRAIN_COLOUR, "o", "training (epoch)"),
            "val_loss": self._epoch_curve(self.loss_plot, VAL_COLOUR, "s", "validation"),
            "train_accuracy": self._epoch_curve(self.accuracy_plot, TRAIN_COLOUR, "o", "training"),
            "val_accuracy": self._epoch_curve(self.accuracy_plot, VAL_COLOUR, "s", "validation"),
            "learning_rate": self.lr_plot.plot(pen=pg.mkPen(LR_COLOUR, width=2)),
        }
        self._markers = []
        for plot in self.plots:
            marker = pg.InfiniteLine(
                angle=90,
                movable=False,
                pen=pg.mkPen(FINE_TUNE_COLOUR, width=2, style=Qt.PenStyle.DashLine),
                label="fine-tune" if plot is self.loss_plot else None,
                labelOpts={"position": 0.92, "color": FINE_TUNE_COLOUR},
            )
            marker.setVisible(False)
            plot.addItem(marker, ignoreBounds=True)
            self._markers.append(marker)

        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        self._apply_palette()
        self.setToolTip(
            "Training loss per batch (faint) and smoothed, loss and accuracy per epoch on the training "
            "and validation images, and the learning rate. A dashed line marks where fine-tuning starts."
        )

    @property
    def plots(self) -> tuple[pg.PlotItem, ...]:
        return (self.loss_plot, self.accuracy_plot, self.lr_plot)

    @property
    def fine_tune_at(self) -> float | None:
        """Where (in epochs) the fine-tuning phase started, or None."""
        return self._fine_tune_at

    @staticmethod
    def _epoch_curve(plot: pg.PlotItem, colour: QColor, symbol: str, name: str) -> pg.PlotDataItem:
        return plot.plot(
            pen=pg.mkPen(colour, width=2), symbol=symbol, symbolSize=7,
            symbolBrush=colour, symbolPen=colour, name=name,
        )

    def clear(self) -> None:
        """Forget every point, ready for a new run."""
        for series in self._series.values():
            series.clear()
        self._ema = None
        self._ema_count = 0
        self._epochs_done = 0
        self._steps_per_epoch = 1
        self._fine_tune_at = None
        for marker in self._markers:
            marker.setVisible(False)
        self._dirty = True
        self.flush()

    def add_event(self, event: object) -> None:
        """Take one training event; the curves follow at the next redraw."""
        if isinstance(event, PhaseStarted):
            self._steps_per_epoch = max(1, int(event.steps_per_epoch))
            if event.name == "fine-tune":
                self._fine_tune_at = float(self._epochs_done)
                for marker in self._markers:
                    marker.setValue(self._fine_tune_at)
                    marker.setVisible(True)
        elif isinstance(event, BatchEnded):
            x = self._epochs_done + (event.batch + 1) / self._steps_per_epoch
            if math.isfinite(event.loss):
                self._series["batch_loss"].append(x, event.loss)
                self._ema_count += 1
                previous = self._ema if self._ema is not None else 0.0
                self._ema = SMOOTHING * previous + (1 - SMOOTHING) * event.loss
                debiased = self._ema / (1 - SMOOTHING**self._ema_count)
                self._series["batch_loss_smooth"].append(x, debiased)
            if math.isfinite(event.learning_rate):
                self._series["learning_rate"].append(x, event.learning_rate)
        elif isinstance(event, EpochEnded):
            self._epochs_done += 1
            x = float(self._epochs_done)
            metrics = event.metrics
            for name, keys in (
                ("train_loss", ("train_loss", "loss")),
                ("val_loss", ("val_loss",)),
                ("train_accuracy", ("train_accuracy", "accuracy")),
                ("val_accuracy", ("val_accuracy",)),
            ):
                value = _metric(metrics, *keys)
                if value is not None:
                    self._series[name].append(x, value)
        else:
            return
        self._dirty = True

    def point_count(self, name: str) -> int:
        """How many points the curve ``name`` shows now (after the last redraw)."""
        x, _ = self.curves[name].getData()
        return 0 if x is None else len(x)

    def flush(self) -> None:
        """Redraw the curves that changed since the last redraw (the timer calls this)."""
        if not self._dirty:
            return
        self._dirty = False
        for name, series in self._series.items():
            self.curves[name].setData(series.x, series.y)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def _apply_palette(self) -> None:
        """Follow the window's light or dark palette instead of pyqtgraph's black."""
        palette = self.palette()
        background = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        self._canvas.setBackground(background)
        for plot in self.plots:
            plot.setTitle(plot.titleLabel.text, color=text)
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setPen(pg.mkPen(text))
                axis.setTextPen(pg.mkPen(text))
            if plot.legend is not None:
                plot.legend.setLabelTextColor(text)
                for _, label in plot.legend.items:
                    label.setText(label.text, color=text)


def _demo() -> None:
    """Play a made-up run: four head epochs, then two fine-tuning epochs."""
    import sys

    import numpy as np
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    widget = LossPlot()
    widget.resize(900, 600)
    widget.setWindowTitle("Loss plot — demo run")
    rng = np.random.default_rng(0)
    steps, head_epochs, tune_epochs = 40, 4, 2
    events: list[object] = [PhaseStarted("head", head_epochs, steps, 1e-3)]
    step = 0
    for phase, epochs, offset, lr in (("head", head_epochs, 0, 1e-3), ("fine-tune", tune_epochs, head_epochs, 1e-4)):
        if phase == "fine-tune":
            events.append(PhaseStarted(phase, epochs, steps, lr))
        for epoch in range(epochs):
            total = offset + epoch
            for batch in range(steps):
                t = total + batch / steps
                rate = lr * 0.5 * (1 + math.cos(math.pi * batch / steps / epochs + math.pi * epoch / epochs))
                loss = 1.1 * math.exp(-0.6 * t) + 0.1 + rng.normal(0, 0.08)
                events.append(BatchEnded(phase, epoch, batch, step, loss, 1 - loss / 1.3, rate, 420.0, 10.0))
                step += 1
            train_loss = 1.1 * math.exp(-0.6 * (total + 1)) + 0.1
            events.append(EpochEnded(phase, epoch, {
                "loss": train_loss, "accuracy": 1 - train_loss / 1.4,
                "val_loss": train_loss + 0.08, "val_accuracy": 0.95 - train_loss / 1.3,
            }))
    feed = QTimer(widget)

    def next_events() -> None:
        for _ in range(5):
            if not events:
                feed.stop()
                return
            widget.add_event(events.pop(0))

    feed.timeout.connect(next_events)
    feed.start(10)
    widget.show()
    if "--screenshot" in sys.argv:
        while events:
            widget.add_event(events.pop(0))
        widget.flush()
        app.processEvents()
        widget.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()


if __name__ == "__main__":
    _demo()
