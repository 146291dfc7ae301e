"""The worker thread wiring: results, events in the GUI thread, errors, cancellation."""

from __future__ import annotations

import threading

from tlstudio.core.spec.errors import Cancelled, DataError
from tlstudio.core.spec.events import Progress
from tlstudio.gui import errors, workers
from tlstudio.gui.workers import run_in_thread


def add(a, b, on_event, should_stop):
    on_event(Progress("add", 1, 1))
    return a + b


def wait_for_stop(started: threading.Event, on_event, should_stop):
    started.set()
    while not should_stop():
        threading.Event().wait(0.005)
    raise Cancelled("stopped")


def test_result_and_events_arrive_in_the_gui_thread(qtbot):
    seen, results = [], []
    gui_thread = threading.get_ident()
    handle = run_in_thread(add, 2, 3, on_event=lambda e: seen.append((e, threading.get_ident() == gui_thread)),
                           on_done=lambda r: results.append((r, threading.get_ident() == gui_thread)))
    with qtbot.waitSignals([handle.done, handle.finished], order="strict", timeout=10_000):
        pass
    assert results == [(5, True)]
    assert seen == [(Progress("add", 1, 1), True)]
    assert handle.is_finished()
    assert handle not in workers.active_workers()


def test_cancellation_ends_the_thread_cleanly(qtbot):
    started = threading.Event()
    done = []
    handle = run_in_thread(wait_for_stop, started, on_done=done.append)
    assert started.wait(5)
    assert handle.is_running()
    with qtbot.waitSignals([handle.cancelled, handle.finished], order="strict", timeout=10_000):
        handle.stop()
    assert handle.is_finished()
    assert not handle.is_running()
    assert handle.wait(0)  # the thread has ended (Qt may already have deleted its object)
    assert done == []


def test_stop_all_waits_for_every_thread(qtbot):
    started = [threading.Event(), threading.Event()]
    handles = [run_in_thread(wait_for_stop, event) for event in started]
    assert all(event.wait(5) for event in started)
    assert workers.stop_all(10_000)
    for handle in handles:
        qtbot.waitUntil(handle.is_finished, timeout=5_000)


def fail(on_event, should_stop):
    raise DataError("No images found.")


def test_a_failure_reaches_on_error(qtbot):
    received = []
    handle = run_in_thread(fail, on_error=received.append)
    with qtbot.waitSignals([handle.failed, handle.finished], order="strict", timeout=10_000):
        pass
    assert isinstance(received[0], DataError)


def test_a_failure_without_on_error_goes_to_the_error_dialog(qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(errors.ErrorDialog, "exec", lambda self: shown.append(self.text()) or 0)
    handle = run_in_thread(fail)
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert shown == ["No images found."]
    qtbot.waitUntil(handle.is_finished, timeout=5_000)


def test_a_function_that_ignores_the_stop_flag_counts_as_cancelled(qtbot):
    gate = threading.Event()

    def slow(on_event, should_stop):
        gate.wait(5)
        return "late"

    done = []
    handle = run_in_thread(slow, on_done=done.append)
    handle.stop()
    with qtbot.waitSignal(handle.cancelled, timeout=10_000):
        gate.set()
    qtbot.waitUntil(handle.is_finished, timeout=5_000)
    assert done == []
