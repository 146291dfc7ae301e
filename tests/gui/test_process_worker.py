"""A worker process seen from the GUI: events in the GUI thread, the window's job list, Stop and quitting."""

from __future__ import annotations

import threading
import time

from tlstudio.core.spec.events import Progress
from tlstudio.gui import workers
from tlstudio.gui.process_worker import run_in_process
from tlstudio.gui.workers import JobKind

# These run in the worker process, which imports this module to find them.

def count(n: int, on_event, should_stop) -> int:
    for i in range(n):
        on_event(Progress("count", i, n))
    return n


def spin(on_event, should_stop) -> None:
    """Never checks should_stop, like a converter inside C code."""
    on_event(Progress("spin", 0))
    while True:
        time.sleep(0.05)


def test_events_and_the_result_arrive_in_the_gui_thread_then_finished(qtbot):
    seen, threads = [], []
    results = []
    handle = run_in_process(
        count, 4,
        on_event=lambda event: (seen.append(event.done), threads.append(threading.current_thread())),
        on_done=results.append, kind=JobKind.EXPORT,
    )
    assert workers.running(JobKind.EXPORT) and handle in workers.active_workers()
    with qtbot.waitSignal(handle.finished, timeout=60_000):
        pass
    assert seen == [0, 1, 2, 3] and results == [4]
    assert set(threads) == {threading.main_thread()}
    assert not workers.running(JobKind.EXPORT) and handle.is_finished()


def test_stop_all_ends_a_process_that_ignores_the_stop(qtbot):
    """What quitting the app does: ask, then end the process, within the wait."""
    events, cancelled, failed = [], [], []
    handle = run_in_process(spin, on_event=events.append, on_cancel=lambda: cancelled.append(True),
                            on_error=failed.append, kind=JobKind.EXPORT)
    handle.call.stop_grace_s = 0.3
    qtbot.waitUntil(lambda: bool(events), timeout=60_000)
    started = time.monotonic()
    assert workers.stop_all(30_000)
    assert time.monotonic() - started < 10
    assert handle.call.exited
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert cancelled == [True] and failed == []
