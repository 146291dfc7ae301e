"""Show a numpy image (the engine's uint8 arrays) scaled to fit, with a caption.

Grad-CAM overlays, activation grids and input images come from the engine as
``(H, W, 3)`` or ``(H, W)`` uint8 arrays, often tiny (32x32 inputs, 4x4 maps
enlarged). :func:`to_qimage` turns one into a ``QImage`` without copying by
hand; :class:`ImageView` paints it as large as its box allows, keeping the
aspect ratio, with crisp pixels when enlarged a lot so feature-map cells stay
visible as cells.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QImage, QPainter, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

SMOOTH_BELOW = 4.0
"""Enlargements smaller than this are smoothed; larger ones keep square pixels."""


def to_qimage(array: np.ndarray) -> QImage:
    """A copy of a uint8 ``(H, W, 3)`` RGB or ``(H, W)`` greyscale array as a QImage."""
    pixels = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    if pixels.ndim == 2:
        height, width = pixels.shape
        return QImage(pixels.data, width, height, width, QImage.Format.Format_Grayscale8).copy()
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        height, width, _ = pixels.shape
        return QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    raise ValueError(f"Expected an image of shape (height, width) or (height, width, 3). Received: {pixels.shape}")


class ImageView(QWidget):
    """An image scaled to fit the widget, or a grey hint text when there is none."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image = QImage()
        self._placeholder = placeholder
        self.setMinimumSize(120, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def image(self) -> QImage:
        return self._image

    def has_image(self) -> bool:
        return not self._image.isNull()

    def set_array(self, array: np.ndarray | None) -> None:
        """Show ``array`` (see :func:`to_qimage`); None clears the view."""
        self._image = QImage() if array is None else to_qimage(array)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(260, 260)

    def image_rect(self) -> QRect:
        """Where the image is painted: centred, as large as fits, aspect ratio kept."""
        if self._image.isNull():
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        left = (self.width() - size.width()) // 2
        top = (self.height() - size.height()) // 2
        return QRect(left, top, size.width(), size.height())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        if self._image.isNull():
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(
                self.rect().adjusted(8, 8, -8, -8),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self._placeholder,
            )
            return
        target = self.image_rect()
        scale = target.width() / max(1, self._image.width())
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < SMOOTH_BELOW)
        painter.drawImage(target, self._image)
