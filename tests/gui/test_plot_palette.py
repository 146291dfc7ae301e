"""Plots follow the window's palette: the loss plot and the run curves share one way to do it."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette

from tlstudio.gui.widgets.loss_plot import LossPlot
from tlstudio.gui.widgets.run_curves import RunCurves


def _dark() -> QPalette:
    palette = QPalette()
    palette.setColor(QPalette.ColorRole.Base, QColor(20, 20, 30))
    palette.setColor(QPalette.ColorRole.Text, QColor(230, 230, 200))
    return palette


def test_a_palette_change_recolours_background_axes_and_legends(qtbot):
    for widget in (LossPlot(), RunCurves()):
        qtbot.addWidget(widget)
        widget.setPalette(_dark())
        assert widget._canvas.backgroundBrush().color() == QColor(20, 20, 30)
        for plot in widget.plots:
            assert plot.getAxis("left").pen().color() == QColor(230, 230, 200)
            if plot.legend is not None:
                assert pg.mkColor(plot.legend.opts["labelTextColor"]) == QColor(230, 230, 200)
