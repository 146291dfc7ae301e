"""Tools ▸ Clear Feature Cache: shows the cache's size, asks, empties it in a worker."""

from __future__ import annotations

import sqlite3

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMainWindow, QMessageBox

from tlstudio.core.spec.errors import UserError
from tlstudio.gui import workers
from tlstudio.gui.errors import show_error
from tlstudio.gui.state import ProjectState

MEBIBYTE = 2**20


class ClearCacheAction(QAction):
    """The menu action; its text carries the cache's size, refreshed by :meth:`update_size`."""

    def __init__(self, window: QMainWindow, state: ProjectState) -> None:
        super().__init__("Clear Feature Cache…", window)
        self._window = window
        self._state = state
        self.job: workers.WorkerHandle | None = None
        tip = "Delete the stored cut-tensor values of your images; the next training computes them again"
        self.setStatusTip(tip)
        self.setToolTip(tip)
        self.triggered.connect(lambda _checked=False: self.clear())

    def update_size(self) -> int | None:
        """Show the feature cache's size in the action's text; return it in bytes (None when unreadable)."""
        size = feature_cache_bytes()
        size_text = "size unknown" if size is None else megabytes(size)
        self.setText(f"Clear Feature Cache ({size_text})…")
        self.setEnabled(size != 0)
        return size

    def clear(self) -> None:
        """Ask, then empty the feature cache in a worker; the status bar says how much was freed."""
        if workers.running(workers.JobKind.TRAINING):
            QMessageBox.information(self._window, "Clear feature cache",
                                    "Training is running and may be reading the feature cache. "
                                    "Clear it once training has ended.")
            return
        size = self.update_size()
        answer = QMessageBox.question(
            self._window,
            "Clear feature cache",
            f"Delete the feature cache ({'size unknown' if size is None else megabytes(size)})? It holds the "
            "cut-tensor values computed for your images; the next training on the same base model and images "
            "computes them again, which takes longer.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.setEnabled(False)
        self._state.busy.emit("Clearing the feature cache…")
        self.job = workers.run_in_thread(
            clear_feature_cache, on_done=self._cleared, on_error=self._not_cleared,
            name="clearing the feature cache", kind=workers.JobKind.CACHE,
        )

    def _cleared(self, freed: int) -> None:
        self._state.busy.emit("")
        self.update_size()
        self._window.statusBar().showMessage(f"Feature cache cleared: {megabytes(freed)} freed.", 8000)

    def _not_cleared(self, error: BaseException) -> None:
        self._state.busy.emit("")
        self.update_size()
        show_error(self._window, error)


def feature_cache_bytes() -> int | None:
    """The default feature cache's size on disk (a quick look at its index); None when it cannot be read."""
    from tlstudio.core.data import feature_cache

    try:
        return feature_cache.status().bytes
    except (UserError, sqlite3.DatabaseError, OSError):
        return None


def clear_feature_cache(on_event=None, should_stop=None) -> int:
    """Empty the default feature cache; the bytes freed. Runs in a worker thread."""
    from tlstudio.core.data import feature_cache

    return feature_cache.clear()


def megabytes(size: int) -> str:
    """``3.4 MB`` below 10 MB, ``42 MB`` above."""
    value = size / MEBIBYTE
    return f"{value:.1f} MB" if 0 < value < 10 else f"{value:.0f} MB"
