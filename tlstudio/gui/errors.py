"""The one place where errors reach the user: a readable dialog.

Worker failures, ``ProjectState.error``, ``sys.excepthook`` and
``threading.excepthook`` all end in :func:`show_error`. A
:class:`~tlstudio.core.spec.errors.UserError` (something the user can fix) is shown
as its plain message; anything else is a bug and shows its message with the
traceback under "Show Details…". A user mistake is said in one sentence,
and the caller may add buttons for what to do about it (``actions``: label
and function); then the rest of the engine's message (URLs, paths,
commands) goes behind "Show Details…", otherwise it is shown below as the
way to fix it. The dialog never ends the app. Exceptions
raised in other threads are carried to the GUI thread by a signal first.
"""

from __future__ import annotations

import sys
import threading
import traceback
from types import TracebackType
from typing import Callable, Sequence

from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton, QWidget

from tlstudio.core.spec.errors import Cancelled, UserError


class ErrorDialog(QMessageBox):
    """A message box for one exception: plain for user mistakes, with details for bugs."""

    def __init__(self, error: BaseException, parent: QWidget | None = None,
                 actions: Sequence[tuple[str, Callable[[], object]]] = ()) -> None:
        super().__init__(parent)
        self.error = error
        self.setObjectName("errorDialog")
        self.action_buttons: dict[str, QPushButton] = {}
        if isinstance(error, UserError):
            self.setIcon(QMessageBox.Icon.Warning)
            self.setWindowTitle("TL Studio")
            sentence = first_sentence(str(error) or type(error).__name__)
            rest = str(error).strip()[len(sentence):].strip()
            self.setText(sentence)
            if rest and actions:
                self.setDetailedText(str(error))  # the buttons say what to do; URLs and commands wait here
            elif rest:
                self.setInformativeText(rest)
        else:
            self.setIcon(QMessageBox.Icon.Critical)
            self.setWindowTitle("TL Studio — unexpected error")
            self.setText(f"Something went wrong inside TL Studio: {type(error).__name__}: {error}")
            self.setInformativeText(
                "Your project is still open; save it to be safe. If this happens again, "
                "please report it with the details below."
            )
            self.setDetailedText("".join(traceback.format_exception(error)))
        for label, action in actions:
            button = self.addButton(label, QMessageBox.ButtonRole.ActionRole)
            button.clicked.connect(lambda _=False, run=action: run())
            self.action_buttons[label] = button
        self.addButton(QMessageBox.StandardButton.Close if actions else QMessageBox.StandardButton.Ok)


def first_sentence(text: str) -> str:
    """The message's first sentence (to the first full stop before a space, or the first line)."""
    line = text.strip().split("\n", 1)[0]
    end = line.find(". ")
    return line[: end + 1] if end >= 0 else line


_showing = False
_pending: list[tuple[QWidget | None, BaseException, Sequence]] = []


def show_error(parent: QWidget | None, error: BaseException,
               actions: Sequence[tuple[str, Callable[[], object]]] = ()) -> None:
    """Show ``error`` in the error dialog (in the GUI thread); one dialog at a time.

    Errors that arrive while a dialog is open are shown after it closes.
    ``Cancelled`` is not an error and is ignored.
    """
    global _showing
    if isinstance(error, Cancelled):
        return
    if _showing:
        _pending.append((parent, error, actions))
        return
    _showing = True
    try:
        ErrorDialog(error, parent or QApplication.activeWindow(), actions).exec()
        while _pending:
            next_parent, next_error, next_actions = _pending.pop(0)
            ErrorDialog(next_error, next_parent or QApplication.activeWindow(), next_actions).exec()
    finally:
        _showing = False


class _Bridge(QObject):
    """Carries exceptions from any thread to the GUI thread's dialog."""

    raised = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.parent_widget: QWidget | None = None
        self.raised.connect(self._show)

    @Slot(object)
    def _show(self, error: BaseException) -> None:
        show_error(self.parent_widget, error)


_bridge: _Bridge | None = None
_previous_hooks: tuple | None = None


def report(error: BaseException) -> None:
    """Send ``error`` to the error dialog from any thread."""
    if _bridge is None:
        app = QApplication.instance()
        if app is not None and QThread.currentThread() is app.thread():
            show_error(None, error)
        else:
            traceback.print_exception(error)
        return
    _bridge.raised.emit(error)


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    if error.__traceback__ is None and tb is not None:
        error = error.with_traceback(tb)
    if not isinstance(error, UserError):
        traceback.print_exception(error)
    report(error)


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    _excepthook(args.exc_type, args.exc_value, args.exc_traceback)


def install(parent: QWidget | None = None) -> None:
    """Route uncaught exceptions of every thread to the error dialog.

    Call once in the GUI thread after the QApplication exists; ``parent`` is
    the window the dialogs belong to.
    """
    global _bridge, _previous_hooks
    if _bridge is None:
        _bridge = _Bridge()
    _bridge.parent_widget = parent
    if _previous_hooks is None:
        _previous_hooks = (sys.excepthook, threading.excepthook)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook


def uninstall() -> None:
    """Restore the exception hooks that were there before :func:`install`."""
    global _bridge, _previous_hooks
    if _previous_hooks is not None:
        sys.excepthook, threading.excepthook = _previous_hooks
        _previous_hooks = None
    if _bridge is not None:
        _bridge.deleteLater()
    _bridge = None
