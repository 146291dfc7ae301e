"""Plots that follow the window's light or dark palette instead of pyqtgraph's black."""

from __future__ import annotations

from typing import Iterable

import pyqtgraph as pg
from PySide6.QtGui import QPalette


def apply_palette(canvas: pg.GraphicsLayoutWidget, plots: Iterable[pg.PlotItem], palette: QPalette) -> None:
    """Give the canvas the palette's base colour and the plots' titles, axes and legends its text colour."""
    text = palette.color(QPalette.ColorRole.Text)
    canvas.setBackground(palette.color(QPalette.ColorRole.Base))
    for plot in plots:
        plot.setTitle(plot.titleLabel.text, color=text)
        for side in ("left", "bottom"):
            axis = plot.getAxis(side)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
        if plot.legend is not None:
            plot.legend.setLabelTextColor(text)
            for _, label in plot.legend.items:
                label.setText(label.text, color=text)
