"""Run an engine function in a worker process, for work that would starve the window from a thread.

:func:`tlstudio.gui.workers.run_in_thread` is enough for work that releases
Python's interpreter lock (TensorFlow's kernels, file reading). Converters and
graph tracing hold it for seconds, and the window cannot paint meanwhile.
:func:`run_in_process` runs such a function through
:class:`~tlstudio.core.spec.process_call.ProcessCall` and offers the same
handle as a thread worker: the same signals, ``stop()``, ``wait()`` and a
:class:`~tlstudio.gui.workers.JobKind`, so the window's "is an export
running?", the quit question and ``stop_all`` treat both alike. A timer in the
GUI thread reads the child's events every ``POLL_MS``; Stop asks the child
first and ends it if it does not stop (see ``ProcessCall``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from tlstudio.core.spec.process_call import ProcessCall
from tlstudio.gui import workers
from tlstudio.gui.workers import JobKind

POLL_MS = 30


class ProcessHandle(QObject):
    """The GUI thread's side of one function running in a worker process.

    Signals as :class:`~tlstudio.gui.workers.WorkerHandle`'s: ``event(object)``,
    then exactly one of ``done(object)``, ``failed(object)`` or ``cancelled()``,
    then ``finished()`` once the process has exited.
    """

    event = Signal(object)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, call: ProcessCall, name: str, kind: JobKind = JobKind.OTHER) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.call = call
        self._finished = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        workers._active.add(self)
        self.call.start()
        self._timer.start()

    def stop(self) -> None:
        """Ask the process to stop; it is ended if it does not (``ProcessCall.stop``)."""
        self.call.stop()

    def is_running(self) -> bool:
        return not self._finished

    def is_finished(self) -> bool:
        return self._finished

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the process has exited; True when it did within ``timeout_ms``.

        Outcomes not yet delivered are delivered by the next poll of the GUI's event loop.
        """
        return self.call.wait(timeout_ms / 1000)

    def _poll(self) -> None:
        for message in self.call.poll():
            if message.kind == "event":
                self.event.emit(message.value)
            elif message.kind == "done":
                self.done.emit(message.value)
            elif message.kind == "failed":
                self.failed.emit(message.value)
            else:
                self.cancelled.emit()
        if self.call.ended and self.call.exited and not self._finished:
            self._timer.stop()
            self._finished = True
            workers._active.discard(self)
            self.finished.emit()


def run_in_process(
    fn: Callable[..., Any],
    *args: Any,
    on_event: Callable[[Any], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_cancel: Callable[[], None] | None = None,
    name: str | None = None,
    kind: JobKind = JobKind.OTHER,
    env: Mapping[str, str] | None = None,
) -> ProcessHandle:
    """Start ``fn(*args, on_event=…, should_stop=…)`` in a worker process; call from the GUI thread.

    Like :func:`tlstudio.gui.workers.run_in_thread`, whose callbacks it takes
    (all run in the GUI thread). ``fn`` and ``args`` must be picklable; ``env``
    is added to the process's environment before ``fn`` is imported there.
    """
    label = name or getattr(fn, "__name__", "work")
    handle = ProcessHandle(ProcessCall(fn, args, env=env, name=label), label, kind)
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
