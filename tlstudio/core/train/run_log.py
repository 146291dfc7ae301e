"""``log.txt``: one timestamped line per phase, epoch, message and finished extraction of a run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tlstudio.core.spec.text import counted
from tlstudio.core.spec.events import EpochEnded, Event, Message, OnEvent, PhaseStarted, Progress


class RunLog:
    """Appends readable lines to a run's log; a log that cannot be written never stops training."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, text: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            with self.path.open("a", encoding="utf-8", errors="backslashreplace") as log:
                log.write(f"{stamp}  {text}\n")
        except OSError:
            pass

    def forwarding(self, on_event: OnEvent) -> OnEvent:
        """An ``on_event`` that logs the event, then passes it on."""

        def report(event: Event) -> None:
            line = log_line(event)
            if line:
                self.write(line)
            on_event(event)

        return report


def log_line(event: Event) -> str:
    """The log's line for ``event``; empty for events not logged (batches, extraction in progress)."""
    if isinstance(event, PhaseStarted):
        return (
            f"Phase {event.name}: {counted(event.epochs, 'epoch')} of "
            f"{counted(event.steps_per_epoch, 'batch', 'batches')}, learning rate {event.learning_rate:g}"
        )
    if isinstance(event, EpochEnded):
        values = "  ".join(f"{key} {value:.6g}" for key, value in event.metrics.items())
        return f"{event.phase} epoch {event.epoch}: {values}"
    if isinstance(event, Message):
        return f"[{event.level}] {event.text}"
    if isinstance(event, Progress) and event.total is not None and event.done == event.total:
        return f"{event.task}: {event.done}/{event.total} {event.message}".rstrip()
    return ""
