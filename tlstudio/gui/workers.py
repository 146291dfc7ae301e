"""Run engine functions off the GUI thread, with events, results, errors and cancellation.

The engine's long functions take ``on_event`` and ``should_stop`` callbacks
(``tlstudio.core.spec.events``). :func:`run_in_thread` calls one in a ``QObject``
worker moved to a ``QThread``, wired as superqt's ``new_worker_qthread`` does:
``thread.started → worker.work`` and ``worker.finished → thread.quit``.
The worker is deleted in the GUI thread once its thread has ended: deleted in
its own thread (``deleteLater``), PySide holds the interpreter lock while Qt
takes its connection locks, and the GUI thread disconnecting any signal at that
moment deadlocks both. Cancellation goes through a ``threading.Event`` that
the GUI sets directly, because the worker thread is busy inside the function
and would never run a queued slot. Events, the result and any error cross to
the GUI thread as ``Signal(object)`` emissions received by a handle that lives
in the GUI thread, so every callback runs there.
"""

from __future__ import annotations

import atexit
import enum
import threading
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from tlstudio.core.spec.errors import Cancelled

_active: set["WorkerHandle"] = set()


class JobKind(enum.Enum):
    """What a worker does, so the window can ask "is training running?" without matching names."""

    TRAINING = "training"
    EXPORT = "export"
    WEIGHTS = "weights"
    BASE_MODEL = "base model"
    SUMMARY = "model summary"
    SCAN = "scan"
    EVALUATION = "evaluation"
    PREDICTION = "prediction"
    EXPLAIN = "explain"
    CUT_COMPARISON = "cut comparison"
    DEVICES = "devices"
    RUNS = "runs"
    CACHE = "feature cache"
    OTHER = "work"

    @property
    def important(self) -> bool:
        """Work the user would lose by quitting (asked about before it is stopped)."""
        return self in (JobKind.TRAINING, JobKind.EXPORT)


class _Worker(QObject):
    """Calls the function in the worker thread and reports how it ended."""

    event = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: Callable[..., Any], args: tuple, stop: threading.Event) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self._stop = stop

    @Slot()
    def work(self) -> None:
        try:
            result = self._fn(*self._args, on_event=self.event.emit, should_stop=self._stop.is_set)
        except Cancelled:
            self.cancelled.emit()
        except Exception as error:  # reported to the GUI, never lost in the thread
            self.failed.emit(error)
        else:
            if self._stop.is_set():
                self.cancelled.emit()
            else:
                self.done.emit(result)
        finally:
            self.finished.emit()


class WorkerHandle(QObject):
    """The GUI thread's side of one running function.

    Signals (all delivered in the GUI thread): ``event(object)`` for each engine
    event, ``done(object)`` with the return value, ``failed(object)`` with the
    exception, ``cancelled()`` when it stopped on request, and ``finished()``
    once the thread has ended, after exactly one of the three.
    """

    event = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: Callable[..., Any], args: tuple, name: str, kind: JobKind = JobKind.OTHER) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self._stop = threading.Event()
        self._finished = False
        self.thread = QThread()
        self.thread.setObjectName(f"tlstudio-{name}")
        self.worker = _Worker(fn, args, self._stop)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.work)
        # quit() is thread-safe; calling it directly from the worker thread lets
        # wait() in the GUI thread return without needing the GUI event loop.
        self.worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.thread.finished.connect(self.thread.deleteLater)
        self.worker.event.connect(self._on_event)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.thread.finished.connect(self._on_thread_finished)

    def start(self) -> None:
        _active.add(self)
        self.thread.start()

    def stop(self) -> None:
        """Ask the function to stop; it raises ``Cancelled`` at its next check."""
        self._stop.set()

    def is_running(self) -> bool:
        return self in _active and not self._finished

    def is_finished(self) -> bool:
        """True once the thread has ended (its Qt object may already be deleted)."""
        if self._finished:
            return True
        return not shiboken6.isValid(self.thread) or self.thread.isFinished()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the thread ends; True when it did within ``timeout_ms``."""
        if not shiboken6.isValid(self.thread):
            return True
        return self.thread.wait(timeout_ms)

    @Slot(object)
    def _on_event(self, event: object) -> None:
        self.event.emit(event)

    @Slot(object)
    def _on_done(self, result: object) -> None:
        self.done.emit(result)

    @Slot(object)
    def _on_failed(self, error: object) -> None:
        self.failed.emit(error)

    @Slot()
    def _on_cancelled(self) -> None:
        self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        self._finished = True
        if shiboken6.isValid(self.worker):
            shiboken6.delete(self.worker)
        _active.discard(self)
        self.finished.emit()


def run_in_thread(
    fn: Callable[..., Any],
    *args: Any,
    on_event: Callable[[Any], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_cancel: Callable[[], None] | None = None,
    name: str | None = None,
    kind: JobKind = JobKind.OTHER,
) -> WorkerHandle:
    """Start ``fn(*args, on_event=…, should_stop=…)`` in a new thread; call from the GUI thread.

    ``on_event``, ``on_done``, ``on_error`` and ``on_cancel`` run in the GUI
    thread. Without ``on_error`` a failure goes to the app's single error dialog
    (:func:`tlstudio.gui.errors.report`). ``name`` labels the work ("training")
    for messages; it defaults to the function's name. ``kind`` says what the
    work is, for questions such as :func:`running` ("is training running?").
    """
    handle = WorkerHandle(fn, args, name or getattr(fn, "__name__", "work"), kind)
    if on_event is not None:
        handle.event.connect(on_event)
    if on_done is not None:
        handle.done.connect(on_done)
    if on_cancel is not None:
        handle.cancelled.connect(on_cancel)
    if on_error is not None:
        handle.failed.connect(on_error)
    else:
        from tlstudio.gui.errors import report

        handle.failed.connect(report)
    handle.start()
    return handle


def active_workers() -> list[WorkerHandle]:
    """The workers whose threads are still running."""
    return [handle for handle in _active if not handle.is_finished()]


def running(kind: JobKind) -> bool:
    """True while a worker of this kind is running."""
    return any(handle.kind is kind for handle in active_workers())


def stop_all(timeout_ms: int = 30_000) -> bool:
    """Stop every running worker and wait for the threads; True when all ended."""
    handles = active_workers()
    for handle in handles:
        handle.stop()
    return all(handle.wait(timeout_ms) for handle in handles)


# A QThread destroyed while running aborts the process: never let Python's exit do that.
atexit.register(stop_all)
