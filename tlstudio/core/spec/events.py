"""Progress events that long engine work reports through ``on_event``.

They are small frozen dataclasses so the same stream feeds the GUI, the CLI's
progress bars, the run history and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass(frozen=True)
class Progress:
    """A step of a long task that is not training: scanning, downloading, extracting.

    ``total`` is None when the amount of work is not known in advance.
    """

    task: str
    done: int
    total: int | None = None
    message: str = ""


@dataclass(frozen=True)
class PhaseStarted:
    """A training phase begins: ``head`` (base frozen) or ``fine-tune``."""

    name: str
    epochs: int
    steps_per_epoch: int
    learning_rate: float


@dataclass(frozen=True)
class BatchEnded:
    """One optimisation step ended. ``step`` counts from 0 across the whole run."""

    phase: str
    epoch: int
    batch: int
    step: int
    loss: float
    accuracy: float
    learning_rate: float
    images_per_second: float
    eta_seconds: float | None


@dataclass(frozen=True)
class EpochEnded:
    """One epoch ended, with its training and validation metrics."""

    phase: str
    epoch: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """Something the user should read: a warning or a note about what happens."""

    text: str
    level: str = "info"


Event = Union[Progress, PhaseStarted, BatchEnded, EpochEnded, Message]
OnEvent = Callable[[Event], None]
ShouldStop = Callable[[], bool]


def ignore_event(event: Event) -> None:
    """The default ``on_event``: report nothing."""


def never_stop() -> bool:
    """The default ``should_stop``: run to the end."""
    return False
