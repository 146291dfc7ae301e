"""Run one engine function in a separate process, with its events, result, errors and stop requests.

Some engine work holds Python's interpreter lock for seconds at a time (the
TFLite converter, graph tracing), so a thread cannot keep a window answering
while it runs. :class:`ProcessCall` runs ``fn(*args, on_event=…, should_stop=…)``
in a *spawned* process (a fresh interpreter: TensorFlow is not fork-safe) and
carries back, over a pipe, each event and then exactly one outcome: the return
value, the exception (same type, message and attributes; the child's traceback
as its ``__cause__``) or the stop.

A stop is asked first: ``should_stop()`` turns true in the child, which stops
at its next check. A child that has not ended ``stop_grace_s`` later is sent
SIGTERM, which raises :class:`~tlstudio.core.spec.errors.Cancelled` in it so
its ``finally`` blocks still remove what it created; one that ignores that
too is killed. The caller reads with :meth:`ProcessCall.poll` (a GUI from a
timer): nothing here blocks except :meth:`ProcessCall.wait`.

``fn``, its arguments, its events and its result must be picklable (module
level functions, ``functools.partial`` of them, frozen dataclasses).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tlstudio.core.spec.errors import Cancelled

TERMINATE_GRACE_S = 3.0
"""After SIGTERM, how long the child has to clean up before it is killed."""


@dataclass(frozen=True)
class Outcome:
    """One message from the child: ``kind`` is ``event``, ``done``, ``failed`` or ``cancelled``."""

    kind: str
    value: Any = None

    @property
    def final(self) -> bool:
        """True for the one message that ends the call (everything but events)."""
        return self.kind != "event"


class RemoteTraceback(Exception):
    """The traceback of an error raised in the child process, attached as the error's ``__cause__``."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


class ProcessCall:
    """``fn(*args, **kwargs, on_event=…, should_stop=…)`` in a spawned process.

    ``env`` is added to the child's environment before anything is unpickled
    there (so it takes effect before the function's modules import TensorFlow).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        stop_grace_s: float = 10.0,
        name: str = "work",
    ) -> None:
        self.name = name
        self.stop_grace_s = stop_grace_s
        self._payload = pickle.dumps((fn, tuple(args), dict(kwargs or {})))
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        stop_receive, self._stop = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_child_main, args=(self._payload, send, stop_receive, dict(env or {})),
            name=f"tlstudio-{name}", daemon=True,
        )
        self._child_ends = (send, stop_receive)
        self._stop_asked_at: float | None = None
        self._terminated_at: float | None = None
        self._ended = False
        self._eof = False

    # ----- the caller's side -----

    def start(self) -> None:
        """Start the child process (returns at once; the child imports what it needs itself)."""
        self._process.start()
        for end in self._child_ends:
            end.close()  # the child holds these ends alone: EOF on either side means the other is gone

    def stop(self) -> None:
        """Ask the child to stop; escalate to SIGTERM and SIGKILL in :meth:`poll` if it does not."""
        if self._stop_asked_at is None:
            self._stop_asked_at = time.monotonic()
            try:
                self._stop.send(True)
            except OSError:
                pass  # the child has already gone

    @property
    def stopping(self) -> bool:
        return self._stop_asked_at is not None

    @property
    def ended(self) -> bool:
        """True once the final outcome has been returned by :meth:`poll`."""
        return self._ended

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exited(self) -> bool:
        """True once the child process has exited (after :meth:`start`)."""
        return not self._process.is_alive()

    def poll(self) -> list[Outcome]:
        """The messages that arrived since the last call, the final one last (then :attr:`ended`).

        Also escalates a stop the child ignores, and ends a child that lingers
        after its final message.
        """
        messages: list[Outcome] = []
        while not self._ended:
            try:
                if self._eof or not self._receive.poll():
                    break
                kind, value = self._receive.recv()
            except (EOFError, OSError):
                self._eof = True  # the child is gone: its exit code tells how
                break
            outcome = Outcome(kind, _rebuild_error(value) if kind == "failed" else value)
            messages.append(outcome)
            self._ended = outcome.final
        if not self._ended and not self._process.is_alive() and not self._receive_pending():
            messages.append(self._vanished())
            self._ended = True
        if self._ended and not self._receive.closed:
            self._receive.close()
            self._stop.close()
            if self._stop_asked_at is None:
                self._stop_asked_at = time.monotonic()  # a child still running after its outcome is ended too
        self._escalate()
        return messages

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the child has exited (escalating a requested stop); True when it did in time."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._process.is_alive():
            self._escalate()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._process.join(0.05 if remaining is None else min(0.05, remaining))
        return True

    def _receive_pending(self) -> bool:
        if self._eof:
            return False
        try:
            return self._receive.poll()
        except (EOFError, OSError):
            return False

    def _escalate(self) -> None:
        """SIGTERM a child that ignored the stop request for ``stop_grace_s``; SIGKILL one that ignores that."""
        if self._stop_asked_at is None or not self._process.is_alive():
            return
        now = time.monotonic()
        if self._terminated_at is None and now - self._stop_asked_at >= self.stop_grace_s:
            self._terminated_at = now
            self._process.terminate()
        elif self._terminated_at is not None and now - self._terminated_at >= TERMINATE_GRACE_S:
            self._process.kill()

    def _vanished(self) -> Outcome:
        self._process.join(1.0)
        code = self._process.exitcode
        if self.stopping:
            return Outcome("cancelled")
        reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Outcome("failed", RuntimeError(
            f"The {self.name} process ended unexpectedly ({reason}) before reporting a result; "
            "it may have run out of memory. Nothing was kept from it; try again, or close other programs first."
        ))


# ----- the child's side -----


def _child_main(payload: bytes, send: Any, stop: Any, env: dict[str, str]) -> None:
    """The child process: run the function and send its events and outcome.

    A stop request arrives on the ``stop`` pipe; its end of file (the caller
    has gone, its app was closed or crashed) counts as one too.
    """
    os.environ.update(env)
    signal.signal(signal.SIGTERM, _raise_cancelled)
    from tlstudio.core.spec.tensorflow_load import install_quiet_import

    install_quiet_import()
    lock = threading.Lock()
    stopped = threading.Event()

    def should_stop() -> bool:
        if not stopped.is_set():
            try:
                if stop.poll():
                    stopped.set()
            except (EOFError, OSError):
                stopped.set()
        return stopped.is_set()

    def post(kind: str, value: Any = None) -> None:
        with lock:
            send.send((kind, value))

    try:
        fn, args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs, on_event=lambda event: post("event", event), should_stop=should_stop)
        if should_stop():
            raise Cancelled("Stopped on request.")
        post("done", result)
    except Cancelled:
        post("cancelled")
    except BaseException as error:  # every failure goes back to the caller, none is lost here
        post("failed", _pack_error(error))
    finally:
        send.close()


def _raise_cancelled(_signum: int, _frame: object) -> None:
    raise Cancelled("Stopped on request.")


_PackedError = tuple[bytes | None, bytes | None, str, str, str, str]


def _pack_error(error: BaseException) -> _PackedError:
    """The error pickled when it survives the round trip, else its attributes; always its type, message, traceback."""
    pickled = _round_trip(error)
    attributes = None if pickled is not None else _round_trip(dict(vars(error)))
    cls = type(error)
    text = "".join(traceback.format_exception(error))
    return pickled, attributes, cls.__module__, cls.__qualname__, str(error), text


def _round_trip(value: object) -> bytes | None:
    try:
        pickled = pickle.dumps(value)
        pickle.loads(pickled)
    except Exception:
        return None
    return pickled


def _rebuild_error(packed: _PackedError) -> BaseException:
    """The child's error as the same type (built without ``__init__`` when it cannot be unpickled)."""
    pickled, attributes, module, qualname, message, text = packed
    error = pickle.loads(pickled) if pickled is not None else _same_type(module, qualname, message)
    if attributes is not None:
        vars(error).update(pickle.loads(attributes))
    error.__cause__ = RemoteTraceback(text)
    return error


def _same_type(module: str, qualname: str, message: str) -> BaseException:
    """An instance of the named exception class holding ``message``, or a RuntimeError naming it."""
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(qualname)
        error = cls.__new__(cls)
        error.args = (message,)
        return error
    except Exception:
        return RuntimeError(f"{module}.{qualname}: {message}")
