"""Engine work in a spawned process: events, results, errors, stops and a killed child come back as they should."""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from tlstudio.core.spec.errors import (
    Cancelled,
    ExportError,
    ImageError,
    TensorNameError,
)
from tlstudio.core.spec.events import Progress
from tlstudio.core.spec.process_call import Outcome, ProcessCall, RemoteTraceback

# The functions below run in the child, which imports this module to find them.

def count(n: int, on_event, should_stop) -> dict:
    for i in range(n):
        on_event(Progress("count", i, n, f"step {i}"))
    return {"counted": n, "env": os.environ.get("TLSTUDIO_PROCESS_TEST")}


ERRORS = {
    "export": lambda: ExportError("The folder 'x' already exists."),
    # Its __init__ takes two arguments, so it does not unpickle as it comes.
    "image": lambda: ImageError("/data/a.png", "truncated file"),
    "tensor": lambda: TensorNameError("No tensor 'block9_pool:0'.", suggestions=("block4_pool:0",)),
    "bug": lambda: ValueError("a bug"),
}


def fail(kind: str, on_event, should_stop):
    raise ERRORS[kind]()


def wait_for_stop(marker: Path, on_event, should_stop):
    on_event(Progress("wait", 0, None, "started"))
    while not should_stop():
        time.sleep(0.01)
    raise Cancelled("stopped")


def ignore_stop(marker: Path, on_event, should_stop):
    """Like a converter stuck in C code: never checks should_stop; cleans up in ``finally``."""
    try:
        on_event(Progress("stuck", 0, None, "started"))
        while True:
            time.sleep(0.05)
    finally:
        marker.write_text("cleaned up")


def unpicklable_result(on_event, should_stop):
    return lambda: None


def run_to_end(call: ProcessCall, timeout_s: float = 60.0) -> list[Outcome]:
    call.start()
    messages: list[Outcome] = []
    deadline = time.monotonic() + timeout_s
    while not call.ended:
        assert time.monotonic() < deadline, f"no outcome within {timeout_s} s: {messages}"
        messages += call.poll()
        time.sleep(0.01)
    assert call.wait(30)
    return messages


def poll_until(call: ProcessCall, condition, timeout_s: float = 60.0) -> list[Outcome]:
    """Poll the call until ``condition(messages read so far)`` holds; those messages."""
    messages: list[Outcome] = []
    deadline = time.monotonic() + timeout_s
    while not condition(messages):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {messages}"
        messages += call.poll()
        time.sleep(0.01)
    return messages


def test_events_then_the_result_arrive_in_order_with_env_set_first():
    call = ProcessCall(count, (3,), env={"TLSTUDIO_PROCESS_TEST": "yes"}, name="count")
    messages = run_to_end(call)
    assert [m.kind for m in messages] == ["event", "event", "event", "done"]
    assert [m.value.done for m in messages[:3]] == [0, 1, 2]
    assert messages[-1].value == {"counted": 3, "env": "yes"}
    assert call.pid != os.getpid()


@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_an_error_comes_back_as_the_same_type_with_the_childs_traceback(kind):
    error = ERRORS[kind]()
    messages = run_to_end(ProcessCall(partial(fail, kind)))
    assert [m.kind for m in messages] == ["failed"]
    received = messages[0].value
    assert type(received) is type(error)
    assert str(received) == str(error)
    assert isinstance(received.__cause__, RemoteTraceback)
    assert "in fail" in str(received.__cause__)
    if isinstance(error, TensorNameError):
        assert received.suggestions == ("block4_pool:0",)
    if isinstance(error, ImageError):
        assert (received.path, received.reason) == ("/data/a.png", "truncated file")


def test_a_stop_is_asked_and_the_child_stops_at_its_next_check(tmp_path):
    call = ProcessCall(wait_for_stop, (tmp_path / "m",), stop_grace_s=30)
    call.start()
    messages = poll_until(call, bool)
    call.stop()
    messages += poll_until(call, lambda _: call.ended)
    assert messages[-1].kind == "cancelled"
    assert call.wait(30)


def test_a_child_that_ignores_the_stop_is_terminated_and_still_cleans_up(tmp_path):
    marker = tmp_path / "marker"
    call = ProcessCall(ignore_stop, (marker,), stop_grace_s=0.2)
    call.start()
    messages = poll_until(call, bool)
    call.stop()
    messages += poll_until(call, lambda _: call.ended)
    assert messages[-1].kind == "cancelled"
    assert call.wait(30)
    assert marker.read_text() == "cleaned up"


def test_a_killed_child_is_a_clear_failure_not_a_hang(tmp_path):
    call = ProcessCall(ignore_stop, (tmp_path / "marker",), name="export")
    call.start()
    messages = poll_until(call, bool)
    os.kill(call.pid, signal.SIGKILL)
    messages += poll_until(call, lambda _: call.ended)
    assert messages[-1].kind == "failed"
    assert isinstance(messages[-1].value, RuntimeError)
    assert "export process ended unexpectedly (killed by signal 9)" in str(messages[-1].value)


def test_a_result_that_cannot_cross_is_reported_as_a_failure():
    messages = run_to_end(ProcessCall(unpicklable_result))
    assert [m.kind for m in messages] == ["failed"]
    assert "pickle" in str(messages[0].value).lower()


def test_the_child_stops_when_its_caller_is_gone(tmp_path):
    """The caller's end of the stop pipe closing (its app closed or crashed) is a stop request."""
    call = ProcessCall(wait_for_stop, (tmp_path / "m",), stop_grace_s=30)
    call.start()
    messages = poll_until(call, bool)
    call._stop.close()
    messages += poll_until(call, lambda _: call.ended)
    assert messages[-1].kind == "cancelled"
