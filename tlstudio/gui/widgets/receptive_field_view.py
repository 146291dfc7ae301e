"""The receptive field of the cut tensor, drawn as a square on a sample image.

One value of the cut tensor is computed from a square patch of the input
image: its receptive field (size in pixels, from the kernel sizes and strides
of the layers before it). Neighbouring values are ``jump`` pixels apart. This
widget shows the image as the network sees it (resized to the input size),
the patch behind one feature-map cell, and faint lines at every ``jump``
pixels marking the feature map's grid. Click to move the square to another
cell.

Run ``python -m tlstudio.gui.widgets.receptive_field_view`` for a demo.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

_FIELD_COLOUR = QColor(255, 200, 0)
_CELL_COLOUR = QColor(230, 40, 40)


def _to_qimage(image: np.ndarray) -> QImage:
    """A deep-copied QImage of an (H, W, 3) uint8 RGB array."""
    array = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    height, width, _ = array.shape
    return QImage(array.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


class ReceptiveFieldView(QWidget):
    """An image at the model's input size with one receptive field drawn on it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._input_size = 224
        self._field: int | None = None
        self._jump: int | None = None
        self._cell = (0, 0)
        self._grid_cells = 0
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip(
            "The receptive field: the square patch of the input image that one value of the cut tensor "
            "is computed from. Deeper tensors see larger patches. Click to move it to another cell."
        )

    @property
    def receptive_field(self) -> int | None:
        return self._field

    @property
    def cell(self) -> tuple[int, int]:
        """The (row, column) of the feature-map cell whose field is drawn."""
        return self._cell

    def set_image(self, image: np.ndarray) -> None:
        """The sample image, (H, W, 3) uint8 RGB; it is shown resized to the input size."""
        self._image = _to_qimage(image)
        self.update()

    def set_field(self, input_size: int, receptive_field: int | None, jump: int | None, cells: int = 0) -> None:
        """Draw a ``receptive_field``-pixel square on an ``input_size`` image.

        ``cells`` is the feature map's width in cells (for the grid and to place
        the square at the centre cell); 0 when the tensor is not spatial.
        """
        self._input_size = max(1, int(input_size))
        self._field = receptive_field
        self._jump = jump
        self._grid_cells = max(0, int(cells))
        centre = self._grid_cells // 2 if self._grid_cells else 0
        self._cell = (centre, centre)
        self.update()

    def field_rect(self) -> QRectF | None:
        """The drawn square in input-image pixels (may reach past the image edges)."""
        if not self._field:
            return None
        if self._jump and self._grid_cells:
            # The centre of feature cell k sits at (k + 0.5) * jump in input pixels for
            # 'same'-padded VGG-style layers, so the square is centred there.
            cy = (self._cell[0] + 0.5) * self._jump
            cx = (self._cell[1] + 0.5) * self._jump
        else:
            cy = cx = self._input_size / 2
        half = self._field / 2
        return QRectF(cx - half, cy - half, self._field, self._field)

    def sizeHint(self) -> QSize:
        return QSize(260, 260)

    def _image_rect(self) -> QRectF:
        side = min(self.width(), self.height()) - 16
        return QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        if not (self._jump and self._grid_cells):
            return
        target = self._image_rect()
        scale = self._input_size / target.width()
        x = (event.position().x() - target.left()) * scale
        y = (event.position().y() - target.top()) * scale
        last = self._grid_cells - 1
        column = int(min(max(x // self._jump, 0), last))
        row = int(min(max(y // self._jump, 0), last))
        self._cell = (row, column)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Window))
        target = self._image_rect()
        if self._image is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            resized = self._image.scaled(
                self._input_size, self._input_size,
                Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation,
            )
            painter.drawImage(target, resized)
        else:
            painter.fillRect(target, palette.color(QPalette.ColorRole.Mid))
        scale = target.width() / self._input_size
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if self._jump and self._grid_cells and self._jump * scale >= 12:
            grid = QColor(255, 255, 255, 70)
            painter.setPen(QPen(grid, 1))
            for k in range(1, self._grid_cells):
                offset = k * self._jump * scale
                painter.drawLine(QPointF(target.left() + offset, target.top()), QPointF(target.left() + offset, target.bottom()))
                painter.drawLine(QPointF(target.left(), target.top() + offset), QPointF(target.right(), target.top() + offset))
        field = self.field_rect()
        if field is not None:
            drawn = QRectF(
                target.left() + field.left() * scale, target.top() + field.top() * scale,
                field.width() * scale, field.height() * scale,
            )
            painter.save()
            visible = drawn.intersected(target)
            shade = QColor(_FIELD_COLOUR)
            shade.setAlpha(45)
            painter.fillRect(visible, shade)
            painter.setPen(QPen(_FIELD_COLOUR, 2))
            painter.drawRect(visible.adjusted(1, 1, -1, -1))
            if self._jump and self._grid_cells:
                cell = QRectF(
                    target.left() + self._cell[1] * self._jump * scale,
                    target.top() + self._cell[0] * self._jump * scale,
                    self._jump * scale, self._jump * scale,
                )
                painter.setPen(QPen(_CELL_COLOUR, 2))
                painter.drawRect(cell)
            painter.restore()
        painter.setPen(QPen(palette.color(QPalette.ColorRole.Dark), 1))
        painter.drawRect(target)


def _demo() -> None:
    from tlstudio.core.data.samples import sample_image
    from tlstudio.gui.widgets.demo import demo_app, show_demo

    demo_app()
    widget = ReceptiveFieldView()
    widget.set_image(sample_image(0, np.random.default_rng(1), size=224))
    widget.set_field(input_size=224, receptive_field=40, jump=4, cells=56)
    show_demo(widget, "Receptive field of block3_conv3:0 (40 px) — demo", (360, 360))


if __name__ == "__main__":
    _demo()
