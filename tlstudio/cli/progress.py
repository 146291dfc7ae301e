"""Text progress bars for the command line, drawn from the engine's events.

A :class:`ProgressRenderer` is an ``on_event`` callback. On a terminal it keeps
one live line per long step (download, scan, extraction, epoch) and redraws it
at most ten times a second; when stderr is a pipe or a file it writes sparse
plain lines instead (a task's start, each quarter and its end; one line per
epoch), so logs stay readable. It depends on nothing but the standard library
and the event classes, which import no TensorFlow.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, TextIO

from tlstudio.core.spec.text import counted, duration_text
from tlstudio.core.spec.events import (
    BatchEnded,
    EpochEnded,
    Event,
    Message,
    PhaseStarted,
    Progress,
)

REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 24
_METRIC_LABELS = (
    ("loss", "loss"),
    ("accuracy", "acc"),
    ("val_loss", "val_loss"),
    ("val_accuracy", "val_acc"),
    ("learning_rate", "lr"),
)


def format_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A bar like ``[#########---------]`` for a fraction in [0, 1]."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def format_metrics(metrics: dict[str, float]) -> str:
    """Training metrics in a fixed, short order: ``loss 0.412  acc 0.861 ...``."""
    parts = []
    for key, label in _METRIC_LABELS:
        if key in metrics:
            value = metrics[key]
            parts.append(
                f"{label} {value:.2e}"
                if key == "learning_rate"
                else f"{label} {value:.4f}"
            )
    return "  ".join(parts)


class ProgressRenderer:
    """Turns engine events into progress output on ``stream`` (stderr by default).

    ``tty`` forces the live (True) or plain (False) style; by default it
    follows ``stream.isatty()``. ``quiet`` keeps only warnings and errors.
    ``clock`` is injectable so tests can drive the redraw throttle.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        tty: bool | None = None,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.quiet = quiet
        self._clock = clock
        self._shown = ""
        self._latest = ""
        self._last_draw = float("-inf")
        self._milestones: dict[str, int] = {}
        self._phase: PhaseStarted | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            self._message(event)
        elif self.quiet:
            return
        elif isinstance(event, Progress):
            self._progress(event)
        elif isinstance(event, PhaseStarted):
            self._phase = event
            self._drop_live()
            self.line(
                f"{event.name}: {counted(event.epochs, 'epoch')} of "
                f"{counted(event.steps_per_epoch, 'batch')}, learning rate {event.learning_rate:g}"
            )
        elif isinstance(event, BatchEnded):
            self._batch(event)
        elif isinstance(event, EpochEnded):
            self._drop_live()
            self.line(
                f"{event.phase} epoch {self._epoch_label(event.epoch)}  {format_metrics(event.metrics)}"
            )

    def line(self, text: str) -> None:
        """Write a permanent line, above the live bar when there is one."""
        self._clear()
        self.stream.write(text + "\n")
        if self._latest:
            self._show(self._latest)
        self.stream.flush()

    def note(self, text: str) -> None:
        """Write a line about what is happening, unless ``quiet``."""
        if not self.quiet:
            self.line(text)

    def close(self) -> None:
        """Leave the last state of a live bar on screen and end its line."""
        if self._latest:
            self._show(self._latest)
            self.stream.write("\n")
            self.stream.flush()
        self._shown = self._latest = ""

    def __enter__(self) -> "ProgressRenderer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _message(self, event: Message) -> None:
        if self.quiet and event.level not in ("warning", "error"):
            return
        prefix = "" if event.level == "info" else f"{event.level}: "
        self.line(prefix + event.text)

    def _progress(self, event: Progress) -> None:
        finished = event.total is not None and event.done >= event.total
        if self.tty:
            if finished:
                self._drop_live()
                self.line(self._progress_text(event))
            else:
                self._live_update(self._progress_text(event))
            return
        milestone = _milestone(event)
        if finished or milestone != self._milestones.get(event.task):
            self._milestones[event.task] = milestone
            self.line(self._progress_text(event, bar=False))
        if finished:
            self._milestones.pop(event.task, None)

    def _progress_text(self, event: Progress, bar: bool = True) -> str:
        if event.total:
            fraction = event.done / event.total
            counts = (
                f"{_count(event.task, event.done)}/{_count(event.task, event.total)}"
            )
            text = f"{event.task} {format_bar(fraction) + ' ' if bar else ''}{fraction:4.0%} {counts}"
        else:
            text = f"{event.task} {_count(event.task, event.done)}"
        return f"{text}  {event.message}" if event.message else text

    def _batch(self, event: BatchEnded) -> None:
        if not self.tty:
            return
        steps = self._phase.steps_per_epoch if self._phase else 0
        done = event.batch + 1
        progress = f"{format_bar(done / steps)} {done}/{steps}" if steps else str(done)
        self._live_update(
            f"{event.phase} epoch {self._epoch_label(event.epoch)} {progress}  "
            f"loss {event.loss:.4f}  acc {event.accuracy:.4f}  "
            f"{event.images_per_second:.0f} img/s  ETA {duration_text(event.eta_seconds)}"
        )

    def _epoch_label(self, epoch: int) -> str:
        """``3/10``: events count epochs from 1 within their phase."""
        total = self._phase.epochs if self._phase else None
        return f"{epoch}/{total}" if total else str(epoch)

    def _live_update(self, text: str) -> None:
        self._latest = text
        now = self._clock()
        if now - self._last_draw >= REDRAW_INTERVAL_S:
            self._last_draw = now
            self._show(text)
            self.stream.flush()

    def _show(self, text: str) -> None:
        self._clear()
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write(text[:width])
        self._shown = text

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = ""

    def _drop_live(self) -> None:
        """Forget the live bar: the line about to be written replaces it."""
        self._latest = ""


def _milestone(event: Progress) -> int:
    """Plain output writes a line each time this changes: each quarter of a
    task of known size, or at 1, 2, 4, 8, ... items when the size is unknown."""
    if event.total is None or event.total <= 0:
        return event.done.bit_length()
    return min(4, 4 * event.done // event.total)


def _count(task: str, value: int) -> str:
    """Byte counts of downloads in MB, everything else as a plain number."""
    return f"{value / 1e6:.1f} MB" if task == "download" else str(value)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
