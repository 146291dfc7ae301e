"""Recipe search on cached features: successive halving over cuts and heads, within a time budget.

Every candidate trains only a head, on the pooled features of its cut tensor,
which the feature cache holds after one pass of the base over the images (all
candidate cuts are taken from the same pass). The search is successive halving
(the budget-aware search of Jamieson & Talwalkar): every candidate gets a few
epochs, the best third goes on with three times as many, and so on up to the
largest number of epochs, each fit with early stopping on the validation
loss (with fewer than 30 validation images, the mean over 3 folds of the
training and validation images together instead). The user's own recipe is
always the first candidate, so the winner is
never worse on validation than what the user had.

Candidates are drawn from a seeded generator, and each fit is seeded, so a
search on the same features gives the same leaderboard. The search checks the
budget before each fit (so it ends within the budget plus one fit) and the
stop flag between epochs; either way it returns what it found so far.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tlstudio.core.spec.errors import DataError, UserError
from tlstudio.core.spec.events import Message, OnEvent, Progress, ShouldStop, ignore_event, never_stop
from tlstudio.core.spec.recipe import HeadSpec, Recipe

HIDDEN = ((), (128,), (256,), (256, 128))
DROPOUT = (0.0, 0.2, 0.5)
RATES = (3e-4, 1e-3, 3e-3, 1e-2)
FIRST_EPOCHS = 3
MAX_EPOCHS = 27
KEEP = 3
"""Each rung keeps the best 1/KEEP of its candidates and gives them KEEP times the epochs."""
PATIENCE = 3
SMALL_VAL = 30
"""With fewer validation images than this, candidates are scored by k-fold cross-validation."""
FOLDS = 3
EAGER_ROWS = 2048
"""Up to this many training rows a fit runs eagerly: tracing a graph per candidate costs more than it saves."""


@dataclass(frozen=True)
class Candidate:
    """One point of the search space."""

    cut_tensor: str
    hidden_units: tuple[int, ...]
    dropout: float
    batch_norm: bool
    learning_rate: float

    def summary(self) -> str:
        hidden = "x".join(map(str, self.hidden_units)) or "none"
        return (
            f"cut {self.cut_tensor}, hidden {hidden}, dropout {self.dropout:g}, "
            f"batch norm {'on' if self.batch_norm else 'off'}, lr {self.learning_rate:.0e}"
        )


@dataclass(frozen=True)
class Trial:
    """One fit of a candidate: its validation scores, the epochs it kept and the seconds it took."""

    candidate: Candidate
    val_accuracy: float
    val_loss: float
    epochs: int
    seconds: float
    rung: int

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "recipe": self.candidate.summary()}


@dataclass(frozen=True)
class TuneResult:
    """Every trial, best first (by validation accuracy, then loss); ``stopped`` when Stop or the budget ended it."""

    leaderboard: tuple[Trial, ...]
    stopped: bool
    out_of_budget: bool
    seconds: float

    @property
    def best(self) -> Trial | None:
        return self.leaderboard[0] if self.leaderboard else None

    def recipe(self, base: Recipe) -> Recipe:
        """``base`` with the best trial's cut, head, learning rate and epochs."""
        best = self.best
        if best is None:
            return base
        c = best.candidate
        head = dataclasses.replace(
            base.head, pooling="avg", hidden_units=c.hidden_units, dropout=c.dropout, batch_norm=c.batch_norm
        )
        training = dataclasses.replace(base.training, learning_rate=c.learning_rate, epochs=max(1, best.epochs))
        return base.replace(cut_tensor=c.cut_tensor, head=head, training=training)


def candidate_cuts(base: Any, default: str | None = None, earlier: int = 2) -> list[str]:
    """The default cut tensor and the outputs of up to ``earlier`` blocks before it (VGG's pools, Lite0's blocks)."""
    from tlstudio.core.model.tensors import catalogue, default_cut_tensor

    default = default or default_cut_tensor(base)
    ends: dict[str, str] = {}
    for info in catalogue(base):
        if info.cuttable and info.block and len(info.shape) == 4:
            ends[info.block] = info.name
    blocks = list(ends.values())
    before = blocks[: blocks.index(default)] if default in blocks else blocks
    return [default, *[name for name in reversed(before) if name != default][:earlier]]


def search_space(
    start: Candidate, cuts: Sequence[str], count: int, seed: int = 0
) -> list[Candidate]:
    """``start`` followed by ``count - 1`` distinct seeded draws from the grid."""
    rng = np.random.default_rng(seed)
    grid = [
        Candidate(cut, hidden, dropout, bn, rate)
        for cut in cuts
        for hidden in HIDDEN
        for dropout in DROPOUT
        for bn in (True, False)
        for rate in RATES
    ]
    others = [c for c in grid if c != start]
    chosen = rng.choice(len(others), size=min(count - 1, len(others)), replace=False)
    return [start, *[others[i] for i in sorted(chosen)]]


def tune_recipe(
    recipe: Recipe,
    base: Any,
    dataset: Any,
    budget_s: float = 300.0,
    candidates: int = 27,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
    base_label: str | None = None,
) -> TuneResult:
    """Search around ``recipe`` on ``dataset``'s train and val splits, features of ``base`` from the cache."""
    from tlstudio.core.model.backbones import preprocessing_mode
    from tlstudio.core.use.cut_comparison import extract_features

    cuts = candidate_cuts(base, recipe.cut_tensor)
    items = [*dataset.train, *dataset.val]
    if not dataset.train or not dataset.val:
        raise DataError("The search needs training and validation images; the data has none in one of them.")
    size = int(base.inputs[0].shape[1] or recipe.base.input_size)
    features = extract_features(
        base, items, cuts, size, preprocessing_mode(recipe.base), on_event, should_stop, base_label=base_label
    )
    head = recipe.head
    start = Candidate(cuts[0], head.hidden_units, head.dropout, head.batch_norm, recipe.training.learning_rate)
    labels = np.asarray([item.label for item in items])
    train = np.arange(len(dataset.train))
    val = np.arange(len(dataset.train), len(items))
    return tune(
        features, labels, train, val, len(dataset.classes), start, budget_s, candidates,
        seed=recipe.data.seed, batch_size=recipe.training.batch_size, on_event=on_event, should_stop=should_stop,
    )


def tune(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    classes: int,
    start: Candidate,
    budget_s: float = 300.0,
    candidates: int = 27,
    seed: int = 0,
    batch_size: int = 32,
    on_event: OnEvent = ignore_event,
    should_stop: ShouldStop = never_stop,
) -> TuneResult:
    """Search over ``features`` (cut tensor -> ``(images, size)``) with labels; rows ``train`` and ``val``.

    Reports Progress (task "tune"), each finished Trial and a Message about it; returns
    the leaderboard when the rungs end, the budget is spent or Stop is asked.
    """
    if budget_s <= 0:
        raise UserError(f"The search budget must be positive seconds. Received: budget={budget_s!r}")
    if not len(train) or not len(val):
        raise DataError("The search needs training and validation images; the data has none in one of them.")
    labels = np.asarray(labels, dtype=np.int64)
    began = time.perf_counter()
    pool = search_space(start, list(features), candidates, seed)
    epochs, rung, trials = FIRST_EPOCHS, 0, []
    stopped = out_of_budget = False
    total = _planned_fits(len(pool))
    while pool and not (stopped or out_of_budget):
        rung_trials = []
        for candidate in pool:
            if should_stop():
                stopped = True
                break
            if time.perf_counter() - began >= budget_s:
                out_of_budget = True
                break
            on_event(Progress("tune", len(trials), total, f"Rung {rung + 1}: {candidate.summary()}"))
            trial = score_candidate(
                candidate, features[candidate.cut_tensor], labels, train, val, classes, epochs, rung,
                seed=seed, batch_size=batch_size, should_stop=should_stop,
            )
            if trial is None:
                stopped = True
                break
            trials.append(trial)
            rung_trials.append(trial)
            on_event(trial)
            on_event(Message(f"{trial.val_accuracy:.3f} val accuracy in {trial.seconds:.1f} s: {candidate.summary()}"))
        if epochs >= MAX_EPOCHS or len(rung_trials) <= 1:
            break
        ranked = sorted(rung_trials, key=_rank)
        pool = [t.candidate for t in ranked[: max(1, len(ranked) // KEEP)]]
        epochs, rung = min(MAX_EPOCHS, epochs * KEEP), rung + 1
    on_event(Progress("tune", total, total, "Search finished"))
    return TuneResult(tuple(sorted(_latest(trials), key=_rank)), stopped, out_of_budget, time.perf_counter() - began)


def score_candidate(
    candidate: Candidate,
    features: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    classes: int,
    epochs: int,
    rung: int = 0,
    seed: int = 0,
    batch_size: int = 32,
    should_stop: ShouldStop = never_stop,
) -> Trial | None:
    """One fit scored on ``val``; with fewer than :data:`SMALL_VAL` validation images, the mean over
    :data:`FOLDS` seeded stratified folds of train and val together (a small split's score is too noisy)."""
    if len(val) >= SMALL_VAL:
        return fit_candidate(candidate, features, labels, train, val, classes, epochs, rung, seed, batch_size,
                             should_stop)
    from sklearn.model_selection import StratifiedKFold

    rows = np.concatenate([train, val])
    smallest = int(np.bincount(labels[rows], minlength=classes)[np.unique(labels[rows])].min())
    folds = max(2, min(FOLDS, smallest))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    began, trials = time.perf_counter(), []
    for fit_rows, held_out in splitter.split(rows, labels[rows]):
        trial = fit_candidate(candidate, features, labels, rows[fit_rows], rows[held_out], classes, epochs, rung,
                              seed, batch_size, should_stop)
        if trial is None:
            return None
        trials.append(trial)
    return Trial(
        candidate,
        float(np.mean([t.val_accuracy for t in trials])),
        float(np.mean([t.val_loss for t in trials])),
        int(np.median([t.epochs for t in trials])),
        time.perf_counter() - began,
        rung,
    )


def fit_candidate(
    candidate: Candidate,
    features: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    classes: int,
    epochs: int,
    rung: int = 0,
    seed: int = 0,
    batch_size: int = 32,
    should_stop: ShouldStop = never_stop,
) -> Trial | None:
    """Train one head on the features for up to ``epochs`` with early stopping; None when stopped."""
    import keras

    from tlstudio.core.model.head import build_head

    began = time.perf_counter()
    keras.utils.set_random_seed(seed)
    spec = HeadSpec(hidden_units=candidate.hidden_units, dropout=candidate.dropout, batch_norm=candidate.batch_norm)
    inputs = keras.Input((features.shape[1],), name="features")
    model = keras.Model(inputs, build_head(inputs, classes, spec), name="candidate_head")
    model.compile(
        optimizer=keras.optimizers.Adam(candidate.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=len(train) <= EAGER_ROWS,
    )
    stop = _StopFlag(should_stop)
    x = np.asarray(features, dtype=np.float32)
    history = model.fit(
        x[train], labels[train], batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
        validation_data=(x[val], labels[val]),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True),
            stop,
        ],
    )
    if stop.stopped:
        return None
    losses = history.history["val_loss"]
    best = int(np.argmin(losses))
    return Trial(
        candidate,
        float(history.history["val_accuracy"][best]),
        float(losses[best]),
        best + 1,
        time.perf_counter() - began,
        rung,
    )


class _StopFlag:
    """A Keras callback that stops the fit at the next batch once ``should_stop()`` is true."""

    def __new__(cls, should_stop: ShouldStop) -> Any:
        import keras

        class StopFlag(keras.callbacks.Callback):
            stopped = False

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if should_stop():
                    self.stopped = True
                    self.model.stop_training = True

        return StopFlag()


def _rank(trial: Trial) -> tuple[float, float, float]:
    loss = trial.val_loss if np.isfinite(trial.val_loss) else np.inf
    return (-trial.val_accuracy, loss, trial.seconds)


def _latest(trials: list[Trial]) -> list[Trial]:
    """Each candidate's trial from its highest rung."""
    latest: dict[Candidate, Trial] = {}
    for trial in trials:
        latest[trial.candidate] = trial
    return list(latest.values())


def _planned_fits(count: int) -> int:
    total, epochs = 0, FIRST_EPOCHS
    while count >= 1:
        total += count
        if epochs >= MAX_EPOCHS or count <= 1:
            break
        count, epochs = max(1, count // KEEP), epochs * KEEP
    return total
