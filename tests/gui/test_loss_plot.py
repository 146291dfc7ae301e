"""The live loss plot: curves fed by events, cheap to redraw, readable axes."""

from __future__ import annotations

import pytest

from tlstudio.core.spec.events import BatchEnded, EpochEnded, PhaseStarted
from tlstudio.gui.widgets.loss_plot import LossPlot, batch_loss, epoch_tick_step, nice_ceiling


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


def test_the_faint_curve_is_each_batchs_loss_not_the_epochs_running_mean(plot):
    losses = [[2.0, 1.0, 3.0], [0.5, 1.5, 0.4]]
    plot.add_event(PhaseStarted("head", 2, 3, 1e-3))
    step = 0
    for epoch, epoch_losses in enumerate(losses):
        mean = 0.0
        for batch, loss in enumerate(epoch_losses):
            mean += (loss - mean) / (batch + 1)  # what Keras reports
            plot.add_event(BatchEnded("head", epoch, batch, step, mean, 0.5, 1e-3, 10.0, 1.0))
            step += 1
        plot.add_event(EpochEnded("head", epoch, {"loss": mean}))
    plot.flush()
    _, y = plot.curves["batch_loss"].getOriginalDataset()
    assert list(y) == pytest.approx([2.0, 1.0, 3.0, 0.5, 1.5, 0.4])
    _, smooth = plot.curves["batch_loss_smooth"].getOriginalDataset()
    assert smooth[0] == pytest.approx(2.0)  # bias-corrected: starts at the first batch, not near zero
    assert smooth[2] > smooth[1]  # follows the batches up and down


def test_each_series_has_its_own_colour(plot):
    colours = {name: curve.opts["pen"].color().rgb() for name, curve in plot.curves.items()
               if name in ("batch_loss", "batch_loss_smooth", "train_loss", "val_loss")}
    assert len(set(colours.values())) == 4


def test_the_kept_epoch_is_marked_and_ticks_are_whole_epochs(plot):
    plot.set_planned_epochs(30)
    feed(plot, epochs=2, steps=5)
    plot.mark_best(2)
    assert plot.best_epoch == 2
    assert all(marker.isVisible() and marker.value() == 2 for marker in plot._best_markers)
    assert plot.loss_plot.getAxis("bottom")._tickSpacing == [(3, 0), (3, 0)]
    assert epoch_tick_step(10) == 1 and epoch_tick_step(30) == 3
    plot.clear()
    assert plot.best_epoch is None and not plot._best_markers[0].isVisible()


def test_batch_loss_from_running_means():
    assert batch_loss(0, 0.7, 123.0) == 0.7
    assert batch_loss(3, 1.0, 2.0) == pytest.approx(4 * 1.0 - 3 * 2.0)
