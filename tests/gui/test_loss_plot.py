"""The live loss plot: curves fed by events, cheap to redraw, readable axes."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.events import BatchEnded, EpochEnded, PhaseStarted
from tlstudio.gui.widgets.loss_plot import LossPlot, nice_ceiling


@pytest.fixture
def plot(qtbot):
    widget = LossPlot()
    qtbot.addWidget(widget)
    return widget


def feed(plot: LossPlot, epochs: int, steps: int, learning_rate: float = 3e-3) -> None:
    plot.add_event(PhaseStarted("head", epochs, steps, learning_rate))
    step = 0
    for epoch in range(epochs):
        for batch in range(steps):
            plot.add_event(BatchEnded("head", epoch, batch, step, 1.0 / (step + 1), 0.5, learning_rate, 10.0, 1.0))
            step += 1
        plot.add_event(EpochEnded("head", epoch, {"loss": 0.5, "val_loss": 0.6, "accuracy": 0.7,
                                                  "val_accuracy": 0.6}))
    plot.flush()


def test_a_constant_learning_rate_is_drawn_against_zero(plot):
    feed(plot, epochs=2, steps=5)
    low, high = plot.lr_plot.viewRange()[1]
    assert low <= 0.0 < 3e-3 < high <= 3e-3 * 1.6


def test_the_x_axis_spans_the_planned_epochs_and_the_loss_axis_the_largest_loss(plot):
    plot.set_planned_epochs(8)
    feed(plot, epochs=2, steps=5)
    assert plot.loss_plot.viewRange()[0][1] == pytest.approx(8, rel=0.05)
    assert plot.accuracy_plot.viewRange()[0] == plot.loss_plot.viewRange()[0]
    low, high = plot.loss_plot.viewRange()[1]
    assert low <= 0 and 1.1 <= high <= 1.3


def test_many_batches_grow_the_buffers_and_batch_curves_have_no_symbols(plot):
    feed(plot, epochs=3, steps=1000)
    assert plot.point_count("batch_loss") == 3000
    assert plot.point_count("batch_loss_smooth") == 3000
    assert plot.point_count("val_loss") == 3
    assert plot.curves["batch_loss"].opts["symbol"] is None
    plot.clear()
    assert plot.point_count("batch_loss") == 0


def test_round_ceilings():
    assert nice_ceiling(1.1) == pytest.approx(1.2)
    assert nice_ceiling(0.0033) == pytest.approx(0.004)
    assert nice_ceiling(7.0) == pytest.approx(8.0)
    assert nice_ceiling(0.0) == 1.0
