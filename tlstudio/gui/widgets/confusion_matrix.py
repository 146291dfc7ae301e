"""A confusion-matrix heat map: true classes down, predicted classes across.

Each cell shows its count, or with :meth:`ConfusionMatrixView.set_normalised`
the share of its row; its colour is always the share of that row (the true
class) that went to the predicted class, so a class with few images is as
readable as a large one. A perfect classifier is a dark diagonal. Clicking a
cell emits ``cell_clicked(true, predicted)`` and outlines it, so a view of the
images can follow.

Run ``python -m tlstudio.gui.widgets.confusion_matrix`` to see it with made-up numbers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PySide6.QtCore import QPoint, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QHelpEvent, QMouseEvent, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

_CORRECT = QColor(31, 119, 180)
_WRONG = QColor(214, 39, 40)
_MAX_LABEL_CHARS = 18


def _elide(name: str) -> str:
    return name if len(name) <= _MAX_LABEL_CHARS else name[: _MAX_LABEL_CHARS - 1] + "…"


class ConfusionMatrixView(QWidget):
    """Paints a confusion matrix with counts or row shares; hover a cell for its meaning, click to pick it."""

    cell_clicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._matrix = np.zeros((0, 0), dtype=np.int64)
        self._classes: tuple[str, ...] = ()
        self._normalised = False
        self._selected: tuple[int, int] | None = None
        self.setMouseTracking(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setMinimumSize(260, 220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip("Rows: the true class. Columns: the class the model predicted. Diagonal: correct.")

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def set_matrix(self, matrix: np.ndarray, classes: Sequence[str]) -> None:
        """Show ``matrix`` (rows = true class) for the class names ``classes``."""
        matrix = np.asarray(matrix, dtype=np.int64)
        if matrix.shape != (len(classes), len(classes)):
            raise ValueError(
                f"The matrix must be {len(classes)}x{len(classes)} for {len(classes)} classes. "
                f"Received shape {matrix.shape}."
            )
        self._matrix = matrix
        self._classes = tuple(classes)
        self._selected = None
        self.updateGeometry()
        self.update()

    def clear(self) -> None:
        self._matrix = np.zeros((0, 0), dtype=np.int64)
        self._classes = ()
        self._selected = None
        self.update()

    @property
    def normalised(self) -> bool:
        """True when cells show the share of their row instead of the count."""
        return self._normalised

    def set_normalised(self, normalised: bool) -> None:
        self._normalised = bool(normalised)
        self.update()

    @property
    def selected_cell(self) -> tuple[int, int] | None:
        """The (true, predicted) cell last clicked, outlined; None when none is."""
        return self._selected

    def set_selected_cell(self, cell: tuple[int, int] | None) -> None:
        self._selected = cell
        self.update()

    def click_cell(self, row: int, column: int) -> None:
        """Pick a cell as a click on it does: outline it and emit ``cell_clicked``."""
        self.set_selected_cell((row, column))
        self.cell_clicked.emit(row, column)

    def cell_center(self, row: int, column: int) -> QPoint:
        """The widget position of a cell's centre (for tests and tooltips)."""
        left, top, side = self._grid()
        return QPoint(int(left + (column + 0.5) * side), int(top + (row + 0.5) * side))

    def cell_value(self, row: int, column: int) -> int:
        """The count in the cell of true class ``row`` and predicted class ``column``."""
        return int(self._matrix[row, column])

    def cell_share(self, row: int, column: int) -> float:
        """The share of the true class ``row`` that was predicted as ``column`` (0 for an empty row)."""
        total = int(self._matrix[row].sum())
        return self.cell_value(row, column) / total if total else 0.0

    def cell_text(self, row: int, column: int) -> str:
        """The text painted in a cell: its count, or its row share when normalised."""
        if self._normalised:
            return f"{self.cell_share(row, column):.0%}"
        return str(self.cell_value(row, column))

    def sizeHint(self) -> QSize:
        n = max(1, len(self._classes))
        return QSize(self._label_width() + 48 * n + 40, self._label_width() + 48 * n + 40)

    def _label_width(self) -> int:
        metrics = QFontMetrics(self.font())
        widest = max((metrics.horizontalAdvance(_elide(c)) for c in self._classes), default=0)
        return widest + 12

    def _grid(self) -> tuple[float, float, float]:
        """The left and top of the cells and the side of one cell, in pixels."""
        n = len(self._classes)
        title = QFontMetrics(self.font()).height() + 6
        label = self._label_width()
        left = title + label
        top = title + label
        side = max(8.0, min((self.width() - left - 8) / n, (self.height() - top - 8) / n))
        return float(left), float(top), side

    def cell_at(self, point: QPoint) -> tuple[int, int] | None:
        """The (row, column) under a widget position, or None."""
        n = len(self._classes)
        if not n:
            return None
        left, top, side = self._grid()
        column = int((point.x() - left) // side)
        row = int((point.y() - top) // side)
        if 0 <= row < n and 0 <= column < n and point.x() >= left and point.y() >= top:
            return row, column
        return None

    def _cell_colour(self, row: int, column: int, base: QColor) -> QColor:
        total = self._matrix[row].sum()
        share = self._matrix[row, column] / total if total else 0.0
        tint = _CORRECT if row == column else _WRONG
        colour = QColor(tint)
        colour.setAlphaF(0.08 + 0.85 * share if self._matrix[row, column] else 0.0)
        return colour

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text_colour = palette.color(QPalette.ColorRole.Text)
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        n = len(self._classes)
        if not n:
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No evaluation yet")
            return
        left, top, side = self._grid()
        metrics = QFontMetrics(self.font())
        line = metrics.height()
        painter.setPen(text_colour)
        bold = QFont(self.font())
        bold.setBold(True)
        painter.setFont(bold)
        painter.drawText(QRectF(left, 0, side * n, line + 4), Qt.AlignmentFlag.AlignCenter, "predicted class")
        painter.save()
        painter.translate(0, top + side * n / 2)
        painter.rotate(-90)
        painter.drawText(QRectF(-side * n / 2, 0, side * n, line + 4), Qt.AlignmentFlag.AlignCenter, "true class")
        painter.restore()
        painter.setFont(self.font())
        label_width = self._label_width()
        for index, name in enumerate(self._classes):
            text = _elide(name)
            painter.drawText(
                QRectF(left - label_width, top + index * side, label_width - 6, side),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text,
            )
            painter.save()
            painter.translate(left + index * side, top - 6)
            painter.rotate(-90)
            painter.drawText(
                QRectF(0, 0, label_width - 6, side), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text
            )
            painter.restore()
        grid_pen = QColor(text_colour)
        grid_pen.setAlpha(60)
        count_font = QFont(self.font())
        count_font.setPointSizeF(max(6.0, min(self.font().pointSizeF() * 1.1, side / 3.2)))
        painter.setFont(count_font)
        for row in range(n):
            for column in range(n):
                rect = QRectF(left + column * side, top + row * side, side, side)
                colour = self._cell_colour(row, column, text_colour)
                painter.fillRect(rect, colour)
                painter.setPen(grid_pen)
                painter.drawRect(rect)
                dark = colour.alphaF() > 0.55
                painter.setPen(QColor("white") if dark else text_colour)
                painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.cell_text(row, column))
        if self._selected is not None and max(self._selected) < n:
            row, column = self._selected
            painter.setPen(QPen(palette.color(QPalette.ColorRole.Highlight), 3))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(QRectF(left + column * side + 1.5, top + row * side + 1.5, side - 3, side - 3))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if event.button() == Qt.MouseButton.LeftButton:
            cell = self.cell_at(event.position().toPoint())
            if cell is not None:
                self.click_cell(*cell)
                event.accept()
                return
        super().mouseReleaseEvent(event)

    def event(self, event) -> bool:
        if event.type() == QHelpEvent.Type.ToolTip:
            cell = self.cell_at(event.pos())
            if cell is not None:
                row, column = cell
                total = int(self._matrix[row].sum())
                count = self.cell_value(row, column)
                share = f" ({count / total:.0%} of {total})" if total else ""
                verb = "correctly classified as" if row == column else "predicted as"
                images = "image" if count == 1 else "images"
                QToolTip.showText(
                    event.globalPos(),
                    f"{count} '{self._classes[row]}' {images} {verb} '{self._classes[column]}'{share}. "
                    "Click to see them.",
                    self,
                )
                return True
        return super().event(event)


def _demo() -> None:
    from tlstudio.gui.widgets.demo import demo_app, show_demo

    demo_app()
    widget = ConfusionMatrixView()
    widget.set_matrix(
        np.array([[18, 2, 0, 0], [1, 15, 3, 1], [0, 4, 11, 0], [0, 0, 1, 24]]),
        ("circles", "squares", "stripes", "a rather long class name"),
    )
    show_demo(widget, "Confusion matrix — demo", (560, 520))


if __name__ == "__main__":
    _demo()
