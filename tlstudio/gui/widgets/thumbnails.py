"""A lazily loaded thumbnail grid that stays smooth with tens of thousands of images.

The view asks :class:`ThumbnailModel` for decorations only for the rows it
paints (``QListView`` with uniform item sizes). A missing thumbnail is answered
with a placeholder and a request to :class:`ThumbnailLoader`, whose jobs in a
``QThreadPool`` decode with Pillow (JPEG draft mode, EXIF orientation) and hand
back a ``QImage`` by signal. Requests are served newest first and old ones are
dropped, so scrolling past thousands of rows never queues thousands of decodes.
Decoded thumbnails are kept in a bounded LRU cache.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QListView, QWidget

THUMBNAIL_SIZE = 96
PATH_ROLE = Qt.ItemDataRole.UserRole
CLASS_ROLE = Qt.ItemDataRole.UserRole + 1


def load_thumbnail(path: str, size: int = THUMBNAIL_SIZE) -> QImage:
    """Decode ``path`` to an RGB ``QImage`` fitting in ``size`` x ``size``; raises on unreadable files.

    Transparent parts are drawn on white, as the model sees them; images under
    half the size are enlarged by a whole factor, pixel by pixel, so they stay crisp.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            image = _stretch_to_8bit(image)
        if max(image.size) < size // 2:
            # A tiny image (28 px digits) is scaled up with sharp pixels instead of shown as a speck.
            scale = size // max(image.size)
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        image.thumbnail((size, size))
        rgb = on_white(image)
        data = rgb.tobytes()
        width, height = rgb.size
    return QImage(data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def on_white(image):
    """RGB with transparent pixels on white, as the model sees them (not on black)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_to_8bit(image):
    """16-bit and float images scaled to their own range, for display."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


class _Job(QRunnable):
    """Decodes queued thumbnails until the loader's queue is empty."""

    def __init__(self, loader: "ThumbnailLoader") -> None:
        super().__init__()
        self._loader = loader

    def run(self) -> None:
        loader = self._loader
        while True:
            path = loader._next()
            if path is None:
                return
            try:
                image = load_thumbnail(path, loader.size)
            except Exception:  # a broken file gets the "cannot show" tile, never a crash
                image = None
            try:
                if image is None:
                    loader.failed.emit(path)
                else:
                    loader.loaded.emit(path, image)
            except RuntimeError:  # the grid was closed while this image was decoding
                return


class ThumbnailLoader(QObject):
    """Decodes thumbnails in a thread pool, newest request first.

    ``loaded(path, QImage)`` and ``failed(path)`` arrive in the thread the loader
    lives in (the GUI thread). At most ``max_pending`` requests wait; older ones
    are forgotten (their rows have scrolled away; they are asked for again when
    painted again).
    """

    loaded = Signal(str, QImage)
    failed = Signal(str)

    def __init__(self, size: int = THUMBNAIL_SIZE, threads: int = 2, max_pending: int = 256,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.max_pending = max_pending
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._jobs = 0
        pending, lock = self._pending, self._lock

        def forget_pending() -> None:
            with lock:
                pending.clear()

        self.destroyed.connect(forget_pending)

    def request(self, path: str) -> None:
        with self._lock:
            if path in self._pending:
                self._pending.move_to_end(path)
            else:
                self._pending[path] = None
                while len(self._pending) > self.max_pending:
                    self._pending.popitem(last=False)
            start = self._jobs < self.pool.maxThreadCount()
            if start:
                self._jobs += 1
        if start:
            self.pool.start(_Job(self))

    def _next(self) -> str | None:
        with self._lock:
            if not self._pending:
                self._jobs -= 1
                return None
            path, _ = self._pending.popitem(last=True)
            return path

    def clear(self) -> None:
        """Forget every waiting request (new dataset)."""
        with self._lock:
            self._pending.clear()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self.clear()
        self.pool.waitForDone(timeout_ms)


class ThumbnailModel(QAbstractListModel):
    """Rows of (image path, class name); decorations are loaded only when asked for."""

    def __init__(self, loader: ThumbnailLoader | None = None, cache_size: int = 4000,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.loader = loader or ThumbnailLoader(parent=self)
        self.cache_size = cache_size
        self.requests = 0
        self._items: list[tuple[str, str]] = []
        self._rows: dict[str, int] = {}
        self._cache: OrderedDict[str, QPixmap] = OrderedDict()
        self._broken: set[str] = set()
        self._placeholder = _tile(self.loader.size, QColor(128, 128, 128, 60))
        self._broken_tile = _tile(self.loader.size, QColor(200, 60, 60, 90), "?")
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)

    def set_items(self, items: Sequence[tuple[str, str]]) -> None:
        """Show these (path, class name) rows; thumbnails already decoded are kept."""
        self.beginResetModel()
        self.loader.clear()
        self._items = list(items)
        self._rows = {path: row for row, (path, _name) in enumerate(self._items)}
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._items):
            return None
        path, class_name = self._items[index.row()]
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self._cache.get(path)
            if pixmap is not None:
                self._cache.move_to_end(path)
                return pixmap
            if path in self._broken:
                return self._broken_tile
            self.requests += 1
            self.loader.request(path)
            return self._placeholder
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(path).name
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{class_name}\n{path}"
        if role == PATH_ROLE:
            return path
        if role == CLASS_ROLE:
            return class_name
        return None

    def is_cached(self, path: str) -> bool:
        return path in self._cache

    def _on_loaded(self, path: str, image: QImage) -> None:
        self._cache[path] = QPixmap.fromImage(image)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._changed(path)

    def _on_failed(self, path: str) -> None:
        self._broken.add(path)
        self._changed(path)

    def _changed(self, path: str) -> None:
        row = self._rows.get(path)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


def _tile(size: int, colour: QColor, text: str = "") -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawRoundedRect(4, 4, size - 8, size - 8, 6, 6)
    if text:
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(pixmap.rect(), Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return pixmap


class ThumbnailGrid(QListView):
    """A grid of thumbnails with file names; only visible rows are ever decoded."""

    def __init__(self, model: ThumbnailModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = model or ThumbnailModel(parent=self)
        size = self.thumbnails.loader.size
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setWrapping(True)
        self.setIconSize(QSize(size, size))
        # The caption's room follows the font, so a larger system font never clips or hides it;
        # a long name is elided in the middle and shown whole in the tooltip.
        line = self.fontMetrics().height()
        self.setGridSize(QSize(size + 24, size + line + 16))
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setWordWrap(False)
        self.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QListView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setModel(self.thumbnails)

    def set_items(self, items: Sequence[tuple[str, str]]) -> None:
        self.thumbnails.set_items(items)


def _demo(folder: str) -> int:
    """``python -m tlstudio.gui.widgets.thumbnails FOLDER``: the grid over every image below a folder."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    paths = sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())
    grid = ThumbnailGrid()
    grid.set_items([(p, Path(p).parent.name) for p in paths])
    grid.resize(900, 600)
    grid.setWindowTitle(f"{len(paths)} images")
    grid.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(_demo(sys.argv[1] if len(sys.argv) > 1 else "."))
