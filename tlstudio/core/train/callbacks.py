"""The training loop's concerns, one small Keras-style callback each.

The loop (:meth:`tlstudio.core.train.training._Trainer._phase`) calls the hooks
Keras' ``fit`` would call, through one ``keras.callbacks.CallbackList``, in
this order: :class:`NanGuard`, :class:`Eta`, :class:`EpochRecord`,
:class:`ProgressEvents`, :class:`StopRequests`, :class:`EarlyStopping`,
:class:`Checkpointing`. What they share lives in one :class:`LoopState`
(counters, history, best weights, early-stopping state), which is also what a
checkpoint saves and a resumed run starts from.

Raising from ``on_train_batch_end`` or ``on_test_batch_end`` stops within one
batch; ``model.stop_training`` ends the phase after the epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tlstudio.core.spec.errors import Cancelled, TrainingError
from tlstudio.core.spec.events import BatchEnded, EpochEnded, OnEvent, ShouldStop
from tlstudio.core.train import distribute

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
FINE_TUNE_PHASE = "fine-tune"


@dataclass
class Best:
    """The lowest validation loss so far, its epoch and a copy of the weights that reached it."""

    val_loss: float = math.inf
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    variables: list = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def watch(self, variables: list) -> None:
        """Track ``variables`` from now on; the model holds the best weights so far."""
        self.variables = variables
        self.values = [v.numpy() for v in variables] if self.epoch else []

    def offer(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Keep the current weights if ``metrics['val_loss']`` is the lowest yet; True when kept."""
        if metrics["val_loss"] < self.val_loss:
            self.val_loss = metrics["val_loss"]
            self.epoch = epoch
            self.metrics = dict(metrics)
            self.values = [v.numpy() for v in self.variables]
            return True
        return False

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)


@dataclass
class LoopState:
    """What the callbacks share across a run: counters, history, the best weights, early stopping.

    ``epoch`` and ``step`` count across the run; ``phase_epoch`` within the
    current phase. ``phase_best`` and ``waited`` are early stopping's.
    """

    epoch: int = 0
    step: int = 0
    head_epochs: int = 0
    phase_epoch: int = 0
    phase_best: float = math.inf
    waited: int = 0
    stopped_early: bool = False
    improved: bool = False
    history: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})
    best: Best = field(default_factory=Best)


@dataclass(frozen=True)
class Phase:
    """One phase of the loop as the callbacks see it."""

    name: str
    epochs: int
    steps: int
    learning_rate: float
    train_count: int
    global_batch: int


class NanGuard(keras.callbacks.Callback):
    """Stop with a TrainingError as soon as the loss is not finite, with the learning rate to try."""

    def __init__(self, phase: Phase, state: LoopState, learning_rate: float, fine_tune_factor: float) -> None:
        super().__init__()
        self.phase = phase
        self.state = state
        self.recipe_rate = learning_rate
        self.fine_tune_factor = fine_tune_factor

    def on_train_batch_end(self, batch, logs=None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            self._fail("loss", loss, batch, float(logs.get("learning_rate", math.nan)))

    def on_epoch_end(self, epoch, logs=None) -> None:
        for key in ("loss", "val_loss"):
            if not math.isfinite(logs[key]):
                self._fail(key, logs[key], None, logs["learning_rate"])

    def _fail(self, what: str, value: float, batch: int | None, rate: float) -> None:
        where = f"epoch {self.state.phase_epoch + 1}" + (f", batch {batch}" if batch is not None else "")
        factor = f", fine_tune_lr_factor={self.fine_tune_factor:g}" if self.phase.name == FINE_TUNE_PHASE else ""
        raise TrainingError(
            f"Training stopped: the {what.replace('_', ' ')} became {value} in the {self.phase.name} phase ({where}) "
            f"at learning rate {rate:g}. The learning rate is probably too high; try "
            f"{self.phase.learning_rate / 10:g} or lower. Received: learning_rate={self.recipe_rate:g}{factor}."
        )


class Eta(keras.callbacks.Callback):
    """Images per second in the current epoch and the time left in the phase."""

    def __init__(self, phase: Phase, state: LoopState) -> None:
        super().__init__()
        self.phase = phase
        self.state = state
        self.phase_start = 0.0
        self.epoch_start = 0.0
        self.batches = 0
        self.speed = 0.0
        self.seconds_left = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.phase_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        now = time.perf_counter()
        self.batches += 1
        images = min(self.phase.train_count, (batch + 1) * self.phase.global_batch)
        self.speed = images / max(now - self.epoch_start, 1e-9)
        epoch = self.state.phase_epoch + 1
        remaining = (self.phase.epochs - epoch) * self.phase.steps + max(0, self.phase.steps - batch - 1)
        self.seconds_left = (now - self.phase_start) / self.batches * remaining


class EpochRecord(keras.callbacks.Callback):
    """Count the epoch, add it to the history and offer its weights as the best."""

    def __init__(self, state: LoopState) -> None:
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None) -> None:
        state = self.state
        state.epoch += 1
        state.phase_epoch += 1
        for key in HISTORY_KEYS:
            state.history[key].append(float(logs[key]))
        state.improved = state.best.offer(state.epoch, logs)


class ProgressEvents(keras.callbacks.Callback):
    """``BatchEnded`` after every training batch and ``EpochEnded`` after every epoch."""

    def __init__(self, phase: Phase, state: LoopState, eta: Eta, report: OnEvent) -> None:
        super().__init__()
        self.phase = phase
        self.state = state
        self.eta = eta
        self.report = report

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.report(
            BatchEnded(
                phase=self.phase.name,
                epoch=self.state.phase_epoch + 1,
                batch=batch,
                step=self.state.step,
                loss=float(logs["loss"]),
                accuracy=float(logs.get("accuracy", math.nan)),
                learning_rate=float(logs["learning_rate"]),
                images_per_second=self.eta.speed,
                eta_seconds=self.eta.seconds_left,
            )
        )
        self.state.step += 1

    def on_epoch_end(self, epoch, logs=None) -> None:
        metrics = {key: float(logs[key]) for key in HISTORY_KEYS}
        self.report(EpochEnded(self.phase.name, self.state.phase_epoch, metrics))


class StopRequests(keras.callbacks.Callback):
    """Raise Cancelled after the batch in which ``should_stop`` became true; on any worker, all stop."""

    def __init__(self, should_stop: ShouldStop, strategy: tf.distribute.Strategy) -> None:
        super().__init__()
        self.should_stop = should_stop
        self.strategy = strategy

    def _check(self) -> None:
        if distribute.agree(self.strategy, self.should_stop()):
            raise Cancelled("Training was cancelled.")

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._check()

    def on_test_batch_end(self, batch, logs=None) -> None:
        self._check()


class EarlyStopping(keras.callbacks.Callback):
    """End the phase after ``patience`` epochs without a lower validation loss in this phase (0: never)."""

    def __init__(self, phase: Phase, state: LoopState, patience: int) -> None:
        super().__init__()
        self.phase = phase
        self.state = state
        self.patience = patience

    def on_epoch_end(self, epoch, logs=None) -> None:
        state = self.state
        if logs["val_loss"] < state.phase_best:
            state.phase_best = logs["val_loss"]
            state.waited = 0
            return
        state.waited += 1
        if self.patience and state.waited >= self.patience and state.phase_epoch < self.phase.epochs:
            state.stopped_early = True
            self.model.stop_training = True


class Checkpointing(keras.callbacks.Callback):
    """After every epoch, hand the state to ``write`` (which saves it to the run folder)."""

    def __init__(self, write: Callable[[bool], None]) -> None:
        super().__init__()
        self.write = write

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.write(bool(self.model.stop_training))


class RunningMeans:
    """Running loss and accuracy over the batches of one pass, as Keras' ``fit`` logs them."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0.0
        self.count = 0.0

    def add(self, sums: Sequence[float]) -> None:
        """Add one batch's ``[loss sum, correct, images]``."""
        loss, correct, count = sums
        self.loss += loss
        self.correct += correct
        self.count += count

    def logs(self, prefix: str = "") -> dict[str, float]:
        if not self.count:
            return {f"{prefix}loss": math.nan, f"{prefix}accuracy": math.nan}
        return {f"{prefix}loss": self.loss / self.count, f"{prefix}accuracy": self.correct / self.count}
