"""Live training curves: loss, accuracy and learning rate, fed by training events.

The widget takes the engine's events (``PhaseStarted``, ``BatchEnded``,
``EpochEnded``) as they arrive, appends the numbers to preallocated numpy
buffers and redraws at most five times a second. Training runs in another
thread that holds the GIL most of the time, so every line of Python a repaint
runs (pyqtgraph's tick layout, auto-range, symbols) has to wait for it: the
window stays smooth only if a redraw does little. So each curve is created
once and updated with ``setData``; the per-batch curves have no symbols, are
clipped to the view and downsampled (min/max per pixel); the smoothed loss is
an incremental moving average; and the axes' ranges are set here, growing in
round steps, instead of pyqtgraph's auto-range changing them (and recomputing
every tick label) on each redraw.

The engine reports, after each batch, Keras' running mean of the loss since
the epoch began; the faint curve is the true loss of each batch recovered from
it (``k·mₖ − (k−1)·mₖ₋₁``), and the smoothed line is an exponential moving
average of those with bias correction, so it follows the batches without
lagging an epoch behind. Each series has its own colour. When training ends
the epoch whose weights were kept is marked (:meth:`LossPlot.mark_best`).

The x axis counts epochs across the whole run, with whole-epoch ticks, so per-batch points land
between the epoch ticks and a fine-tuning phase continues where the head
phase stopped, marked by a vertical line. It spans the planned epochs from
the start. The learning-rate axis starts at zero, so a constant rate reads as
a flat line at its value rather than as noise around it.

Run ``python -m tlstudio.gui.widgets.loss_plot`` to watch it play a made-up run.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from tlstudio.core.spec.events import BatchEnded, EpochEnded, PhaseStarted
from tlstudio.gui.widgets.plot_palette import apply_palette

REDRAW_INTERVAL_MS = 200
SMOOTHING = 0.9
HEADROOM = 1.1
"""The y axes reach at least this many times the largest value shown."""
NICE_STEPS = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
EMPTY_Y_TOPS = {"loss": 1.0, "learning_rate": 1e-3}
"""The y axes' tops before there is data."""
Y_PADDING = 0.06
"""Room below zero and above the top, so the end ticks keep their labels."""

BATCH_COLOUR = QColor(120, 150, 190, 90)
SMOOTH_COLOUR = QColor(20, 60, 120)
TRAIN_COLOUR = QColor(31, 119, 180)
VAL_COLOUR = QColor(230, 120, 20)
LR_COLOUR = QColor(140, 80, 190)
FINE_TUNE_COLOUR = QColor(40, 160, 80)
BEST_COLOUR = QColor(200, 30, 60)
MAX_EPOCH_TICKS = 12


def batch_loss(batch: int, running_mean: float, previous_mean: float) -> float:
    """The loss of batch ``batch`` (0-based in its epoch) from the running means after it and before it."""
    if batch == 0:
        return running_mean
    return (batch + 1) * running_mean - batch * previous_mean


def epoch_tick_step(epochs: float) -> int:
    """Whole epochs between ticks, so at most about ``MAX_EPOCH_TICKS`` ticks span ``epochs``."""
    return max(1, math.ceil(epochs / MAX_EPOCH_TICKS))


class _Series:
    """The x and y values of one curve, in numpy arrays that double in capacity when full."""

    def __init__(self, capacity: int = 1024) -> None:
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self.size = 0

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.size]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.size]

    def append(self, x: float, y: float) -> None:
        if self.size == len(self._x):
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self.size] = x
        self._y[self.size] = y
        self.size += 1

    def clear(self) -> None:
        self.size = 0


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10ⁿ) not below ``value``."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(step * scale for step in NICE_STEPS if step * scale >= value * (1 - 1e-9))


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
    ``learning_rate``. The three plots' x axes span the same epochs; dragging
    or zooming one stops them following the run until a plot's "A" button is
    clicked.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._series = {name: _Series() for name in (
            "batch_loss", "batch_loss_smooth", "train_loss", "val_loss",
            "train_accuracy", "val_accuracy", "learning_rate",
        )}
        self._changed: set[str] = set()
        self._ema = 0.0
        self._ema_count = 0
        self._running_mean = 0.0
        self._epochs_done = 0
        self._steps_per_epoch = 1
        self._planned_epochs = 0
        self._fine_tune_at: float | None = None
        self.best_epoch: int | None = None
        self._largest = {"loss": 0.0, "learning_rate": 0.0}
        self._x_top: float | None = None
        self._y_tops: dict[str, float | None] = {"loss": None, "learning_rate": None}
        self._x_follows_run = True

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
            plot.disableAutoRange()
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setLabel("bottom", "epoch")
            plot.setMouseEnabled(x=True, y=False)
            plot.getViewBox().sigRangeChangedManually.connect(self._on_zoomed)
            plot.autoBtn.clicked.connect(self.follow_run)
        self.accuracy_plot.setYRange(0.0, 1.0)
        lr_axis = self.lr_plot.getAxis("left")
        lr_axis.enableAutoSIPrefix(False)
        lr_axis.setWidth(62)

        self.loss_plot.addLegend(offset=(-10, 10))
        self.accuracy_plot.addLegend(offset=(-10, -10))
        self.curves: dict[str, pg.PlotDataItem] = {
            "batch_loss": self._batch_curve(self.loss_plot, pg.mkPen(BATCH_COLOUR, width=1), "each batch"),
            "batch_loss_smooth": self._batch_curve(
                self.loss_plot, pg.mkPen(SMOOTH_COLOUR, width=2), "batches, smoothed"
            ),
            "train_loss": self._epoch_curve(self.loss_plot, TRAIN_COLOUR, "o", "training (epoch)"),
            "val_loss": self._epoch_curve(self.loss_plot, VAL_COLOUR, "s", "validation"),
            "train_accuracy": self._epoch_curve(self.accuracy_plot, TRAIN_COLOUR, "o", "training"),
            "val_accuracy": self._epoch_curve(self.accuracy_plot, VAL_COLOUR, "s", "validation"),
            "learning_rate": self._batch_curve(self.lr_plot, pg.mkPen(LR_COLOUR, width=2), None),
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

        self._best_markers = []
        for plot in (self.loss_plot, self.accuracy_plot):
            marker = pg.InfiniteLine(
                angle=90, movable=False, pen=pg.mkPen(BEST_COLOUR, width=1, style=Qt.PenStyle.DotLine),
                label="kept" if plot is self.loss_plot else None,
                labelOpts={"position": 0.8, "color": BEST_COLOUR},
            )
            marker.setVisible(False)
            plot.addItem(marker, ignoreBounds=True)
            self._best_markers.append(marker)

        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        self._apply_palette()
        self._apply_ranges()
        self.setToolTip(
            "The loss of each batch (faint) and smoothed, loss and accuracy per epoch on the training "
            "and validation images, and the learning rate. A dashed line marks where fine-tuning starts; "
            "a dotted red line the epoch whose weights were kept."
        )

    @property
    def plots(self) -> tuple[pg.PlotItem, ...]:
        return (self.loss_plot, self.accuracy_plot, self.lr_plot)

    @staticmethod
    def _batch_curve(plot: pg.PlotItem, pen, name: str | None) -> pg.PlotDataItem:
        """A per-batch curve: a line without symbols, clipped to the view, min/max-downsampled per pixel."""
        curve = plot.plot(pen=pen, name=name, skipFiniteCheck=True)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        return curve

    @staticmethod
    def _epoch_curve(plot: pg.PlotItem, colour: QColor, symbol: str, name: str) -> pg.PlotDataItem:
        """A per-epoch curve: few points, each marked with a symbol."""
        return plot.plot(
            pen=pg.mkPen(colour, width=2), symbol=symbol, symbolSize=7,
            symbolBrush=colour, symbolPen=colour, name=name, skipFiniteCheck=True,
        )

    def set_planned_epochs(self, epochs: int) -> None:
        """Let the x axis span the whole run (head and fine-tuning epochs) from its start."""
        self._planned_epochs = max(0, int(epochs))
        self._apply_ranges()

    def follow_run(self) -> None:
        """Let the x axis follow the run again after the user dragged or zoomed it."""
        self._x_follows_run = True
        self._x_top = None
        for plot in self.plots:
            plot.disableAutoRange()
        self.accuracy_plot.setYRange(0.0, 1.0)
        self._y_tops = dict.fromkeys(self._y_tops)
        self._apply_ranges()

    def _on_zoomed(self, *_args: object) -> None:
        self._x_follows_run = False

    def clear(self) -> None:
        """Forget every point, ready for a new run."""
        for series in self._series.values():
            series.clear()
        self._changed = set(self._series)
        self._ema = 0.0
        self._ema_count = 0
        self._running_mean = 0.0
        self._epochs_done = 0
        self._steps_per_epoch = 1
        self._planned_epochs = 0
        self._fine_tune_at = None
        self.best_epoch = None
        self._largest = dict.fromkeys(self._largest, 0.0)
        for marker in self._markers + self._best_markers:
            marker.setVisible(False)
        self.follow_run()
        self.flush()

    def add_event(self, event: object) -> None:
        """Take one training event; the curves follow at the next redraw."""
        if isinstance(event, PhaseStarted):
            self._steps_per_epoch = max(1, int(event.steps_per_epoch))
            self._planned_epochs = max(self._planned_epochs, self._epochs_done + int(event.epochs))
            if event.name == "fine-tune":
                for marker in self._markers:
                    marker.setValue(float(self._epochs_done))
                    marker.setVisible(True)
        elif isinstance(event, BatchEnded):
            x = self._epochs_done + (event.batch + 1) / self._steps_per_epoch
            if math.isfinite(event.loss):
                loss = batch_loss(event.batch, event.loss, self._running_mean)
                self._running_mean = event.loss
                self._series["batch_loss"].append(x, loss)
                self._ema_count += 1
                self._ema = SMOOTHING * self._ema + (1 - SMOOTHING) * loss
                debiased = self._ema / (1 - SMOOTHING**self._ema_count)
                self._series["batch_loss_smooth"].append(x, debiased)
                self._largest["loss"] = max(self._largest["loss"], loss)
                self._changed.update(("batch_loss", "batch_loss_smooth"))
            if math.isfinite(event.learning_rate):
                self._series["learning_rate"].append(x, event.learning_rate)
                self._largest["learning_rate"] = max(self._largest["learning_rate"], event.learning_rate)
                self._changed.add("learning_rate")
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
                    self._changed.add(name)
                    if name.endswith("loss"):
                        self._largest["loss"] = max(self._largest["loss"], value)

    def mark_best(self, epoch: int) -> None:
        """Mark the epoch (counted from 1 across both phases) whose weights were kept."""
        self.best_epoch = int(epoch)
        for marker in self._best_markers:
            marker.setValue(float(epoch))
            marker.setVisible(epoch > 0)

    def point_count(self, name: str) -> int:
        """How many points the curve ``name`` holds now (after the last redraw)."""
        x, _ = self.curves[name].getOriginalDataset()
        return 0 if x is None else len(x)

    def flush(self) -> None:
        """Redraw the curves that changed since the last redraw (the timer calls this)."""
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        for name in changed:
            series = self._series[name]
            self.curves[name].setData(series.x, series.y)
        self._apply_ranges()

    def _apply_ranges(self) -> None:
        """Widen the axes only when the data outgrows them, in round steps, so they rarely change."""
        last_x = max((series.x[-1] for series in self._series.values() if series.size), default=0.0)
        x_top = max(float(self._planned_epochs), math.ceil(last_x), 1.0)
        if self._x_follows_run and x_top != self._x_top:
            self._x_top = x_top
            step = epoch_tick_step(x_top)
            for plot in self.plots:
                plot.setXRange(0.0, x_top, padding=0.02)
                plot.getAxis("bottom").setTickSpacing(step, step)
        for key, plot in (("loss", self.loss_plot), ("learning_rate", self.lr_plot)):
            largest = self._largest[key]
            top = self._y_tops[key]
            if top is None or largest * HEADROOM > top:
                top = nice_ceiling(largest * HEADROOM) if largest > 0 else EMPTY_Y_TOPS[key]
                self._y_tops[key] = top
                plot.setYRange(0.0, top, padding=Y_PADDING)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def _apply_palette(self) -> None:
        """Follow the window's light or dark palette instead of pyqtgraph's black."""
        apply_palette(self._canvas, self.plots, self.palette())


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
            mean = 0.0
            for batch in range(steps):
                t = total + batch / steps
                rate = lr * 0.5 * (1 + math.cos(math.pi * batch / steps / epochs + math.pi * epoch / epochs))
                loss = 1.1 * math.exp(-0.6 * t) + 0.1 + rng.normal(0, 0.08)
                mean += (loss - mean) / (batch + 1)  # the engine reports Keras' running mean
                events.append(BatchEnded(phase, epoch, batch, step, mean, 1 - loss / 1.3, rate, 420.0, 10.0))
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
        widget.mark_best(5)
        widget.flush()
        app.processEvents()
        widget.grab().save(sys.argv[sys.argv.index("--screenshot") + 1])
        return
    app.exec()


if __name__ == "__main__":
    _demo()
