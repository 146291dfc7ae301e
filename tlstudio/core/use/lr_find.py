"""The learning-rate finder: a short sweep of the head on cached features (fastai's ``lr_find``).

The head is trained for a few hundred batches while the learning rate grows
exponentially from ``start`` to ``end``; the loss is smoothed with an
exponential moving average (bias-corrected) and the sweep stops once it
exceeds four times its lowest value (divergence). Two suggestions are read
from the smoothed curve, as fastai does: the *valley* (two thirds of the way
down the longest stretch where the loss keeps falling; the one we suggest)
and the *steepest* descent (where the loss falls fastest against the log of
the rate). It trains on the features only, so it takes seconds; it does not
change any model the user has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tlstudio.core.spec.errors import Cancelled, DataError, UserError
from tlstudio.core.spec.events import OnEvent, Progress, ShouldStop, ignore_event, never_stop

START = 1e-7
END = 10.0
STEPS = 100
SMOOTHING = 0.98
DIVERGENCE = 4.0


@dataclass(frozen=True)
class LrCurve:
    """The sweep: rates tried, raw and smoothed losses, and the suggested rates."""

    rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    valley: float
    steepest: float
    diverged: bool

    @property
    def suggestion(self) -> float:
        """The rate to use: the valley."""
        return self.valley

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "valley": self.valley,
            "steepest": self.steepest,
            "diverged": self.diverged,
            "rates": list(self.rates),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
        }


def find_learning_rate(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    head: Any,
    optimizer: str = "adam",
    batch_size: int = 32,
    start: float = START,
    end: float = END,
    steps: int = STEPS,
    seed: int = 0,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> LrCurve:
    """Sweep the learning rate of a fresh head (``head`` a HeadSpec) on ``features``; see the module docstring."""
    import keras

    from tlstudio.core.model.head import build_head

    if not 0 < start < end:
        raise UserError(f"The sweep needs 0 < start < end. Received: start={start!r}, end={end!r}")
    if steps < 5:
        raise UserError(f"The sweep needs at least 5 steps. Received: steps={steps!r}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2 or classes < 2:
        raise DataError("The learning-rate finder needs at least 2 images and 2 classes.")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features.shape[1],), name="features")
    model = keras.Model(inputs, build_head(inputs, classes, head), name="lr_find_head")
    opt = keras.optimizers.Adam(start) if optimizer == "adam" else keras.optimizers.SGD(start, momentum=0.9)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float32)
    order = rng.permutation(len(labels))
    batch = min(batch_size, len(labels))
    rates, losses, smoothed = [], [], []
    average, best, diverged, position = 0.0, math.inf, False, 0
    for step in range(steps):
        if should_stop():
            raise Cancelled("The learning-rate sweep was cancelled.")
        rate = start * (end / start) ** (step / (steps - 1))
        opt.learning_rate.assign(rate)
        if position + batch > len(labels):
            order, position = rng.permutation(len(labels)), 0
        rows = order[position : position + batch]
        position += batch
        loss = float(np.asarray(model.train_on_batch(x[rows], labels[rows])).reshape(-1)[0])
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(loss) or (step > 0 and value > DIVERGENCE * best):
            diverged = True
            break
        rates.append(rate)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        on_event(Progress("lr-find", step + 1, steps, f"Learning rate {rate:.1e}: loss {value:.3f}"))
    if len(rates) < 3:
        raise DataError(
            "The loss diverged at once, from the smallest learning rate. Check the data, or lower start "
            f"(Received: start={start!r})."
        )
    return LrCurve(tuple(rates), tuple(losses), tuple(smoothed), valley(rates, smoothed), steepest(rates, smoothed),
                   diverged)


def valley(rates: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's valley: two thirds down the longest run of falling loss."""
    n = len(losses)
    run = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
    end = int(np.argmax(run))
    begin = end - run[end]
    third = (end - begin) / 3
    index = min(n - 1, max(0, begin + int(third) + int(third / 2)))
    return float(rates[index])


def steepest(rates: Sequence[float], losses: Sequence[float]) -> float:
    """The rate where the smoothed loss falls fastest against log(rate), past the first tenth of the sweep
    (where the moving average has not settled)."""
    slope = np.gradient(np.asarray(losses), np.log(np.asarray(rates)))
    skip = len(slope) // 10
    return float(rates[skip + int(np.argmin(slope[skip:]))])
