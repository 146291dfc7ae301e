"""A frame that accepts folders dragged from the file manager.

It reads the file URLs of a drop, passes the folders on through
``folders_dropped(paths, add)`` (``add`` is True when Ctrl was held, meaning
"add to the current folders" rather than "replace them") and explains what was
wrong with anything else through ``rejected(message)``: a file instead of a
folder, a link that is not on this computer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget


def local_paths(mime: QMimeData) -> tuple[list[Path], list[str]]:
    """The local paths among a drag's URLs, and the URLs that are not local files."""
    paths: list[Path] = []
    others: list[str] = []
    for url in mime.urls() if mime.hasUrls() else []:
        if url.isLocalFile():
            paths.append(Path(url.toLocalFile()))
        else:
            others.append(url.toString())
    return paths, others


class DropZone(QFrame):
    """Where image folders are dropped. Shows what it accepts and reacts while dragging."""

    folders_dropped = Signal(list, bool)
    rejected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropZone")
        self.setAcceptDrops(True)
        self.setProperty("dragActive", False)
        self.setMinimumHeight(96)
        self.setMaximumHeight(150)
        title = QLabel("Drop image folders here")
        title.setObjectName("dropTitle")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        title.setFont(font)
        hint = QLabel(
            "One folder with a sub-folder per class  ·  a folder with train/ and val/  ·  "
            "or several class folders at once.\nHold Ctrl while dropping to add to the current folders."
        )
        hint.setWordWrap(True)
        for label in (title, hint):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addStretch(1)
        self.setToolTip(
            "Drag folders here from your file manager.\n"
            "• A folder whose sub-folders are the classes (cats/, dogs/ …)\n"
            "• A folder holding train/ and val/ (and optionally test/), each with class sub-folders\n"
            "• Several folders selected together: each one becomes a class named after it"
        )
        self.setWhatsThis(self.toolTip())

    def _set_active(self, active: bool) -> None:
        self.setProperty("dragActive", active)
        self.style().unpolish(self)
        self.style().polish(self)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
            self._set_active(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self._set_active(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_active(False)
        paths, others = local_paths(event.mimeData())
        if not paths and not others:
            event.ignore()
            return
        event.acceptProposedAction()
        self.handle_paths(paths, others, add=bool(event.modifiers() & _ADD_MODIFIER))

    def handle_paths(self, paths: list[Path], others: list[str] = (), add: bool = False) -> None:
        """Split dropped paths into folders (passed on) and everything else (explained)."""
        folders = [p for p in paths if p.is_dir()]
        problems = []
        files = [p for p in paths if p.exists() and not p.is_dir()]
        missing = [p for p in paths if not p.exists()]
        if files:
            names = ", ".join(repr(p.name) for p in files[:3]) + (" …" if len(files) > 3 else "")
            problems.append(
                f"{names} {'is a file' if len(files) == 1 else 'are files'}, not a folder. Drop the folder that "
                "holds your images (one sub-folder per class), or select several class folders and drop them together."
            )
        if missing:
            problems.append(f"{str(missing[0])!r} does not exist (any more). Check the path and drop it again.")
        if others:
            problems.append(f"Only folders on this computer can be used. Received: {others[0]}")
        if problems:
            self.rejected.emit("\n".join(problems))
        if folders:
            self.folders_dropped.emit([str(f) for f in folders], add)


_ADD_MODIFIER = Qt.KeyboardModifier.MetaModifier if sys.platform == "darwin" else Qt.KeyboardModifier.ControlModifier
