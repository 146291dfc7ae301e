"""Recipe search: within the budget, respects Stop, keeps the best, and its winner beats a poor start."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tlstudio.core.spec.errors import UserError
from tlstudio.core.spec.events import Message
from tlstudio.core.spec.recipe import Recipe
from tlstudio.core.use import tune


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (50, 24)) + 2.5 * np.eye(24)[c] for c in range(3)]).astype("float32")
    y = np.repeat(np.arange(3), 50)
    order = rng.permutation(len(y))
    return {"good:0": x, "noise:0": rng.normal(0, 1, x.shape).astype("float32")}, y, order[:110], order[110:]


def test_search_finds_a_better_recipe_than_a_poor_start_and_saves_it():
    features, y, train, val = _problem()
    start = tune.Candidate("noise:0", (), 0.0, False, 3e-4)
    result = tune.tune(features, y, train, val, 3, start, budget_s=600, candidates=4, seed=1)
    assert not result.stopped and not result.out_of_budget
    best = result.best
    assert best.candidate.cut_tensor == "good:0" and best.val_accuracy > 0.8
    scores = [(-t.val_accuracy, t.val_loss) for t in result.leaderboard]
    assert scores == sorted(scores)
    recipe = result.recipe(Recipe())
    assert recipe.cut_tensor == "good:0" and recipe.training.learning_rate == best.candidate.learning_rate
    assert recipe.head.hidden_units == best.candidate.hidden_units


def test_search_is_reproducible():
    features, y, train, val = _problem()
    start = tune.Candidate("good:0", (), 0.0, True, 1e-3)
    first = tune.tune(features, y, train, val, 3, start, budget_s=600, candidates=2)
    second = tune.tune(features, y, train, val, 3, start, budget_s=600, candidates=2)
    assert [(t.candidate, t.val_accuracy) for t in first.leaderboard] == [
        (t.candidate, t.val_accuracy) for t in second.leaderboard]


def test_budget_ends_the_search_after_at_most_one_more_fit():
    features, y, train, val = _problem()
    start = tune.Candidate("good:0", (), 0.0, True, 1e-3)
    began = time.perf_counter()
    result = tune.tune(features, y, train, val, 3, start, budget_s=0.01, candidates=20)
    assert result.out_of_budget and len(result.leaderboard) == 1
    assert time.perf_counter() - began < 0.01 + max(t.seconds for t in result.leaderboard) + 1.0


def test_stop_keeps_the_best_found_so_far():
    features, y, train, val = _problem()
    start = tune.Candidate("good:0", (), 0.0, True, 1e-3)
    finished = []

    def on_event(event: object) -> None:
        if isinstance(event, Message):
            finished.append(event)

    result = tune.tune(features, y, train, val, 3, start, budget_s=600, candidates=20, on_event=on_event,
                       should_stop=lambda: len(finished) >= 2)
    assert result.stopped
    assert len(result.leaderboard) == 2


def test_bad_budget_is_refused():
    features, y, train, val = _problem()
    with pytest.raises(UserError, match="budget"):
        tune.tune(features, y, train, val, 3, tune.Candidate("good:0", (), 0.0, True, 1e-3), budget_s=0)


def test_candidate_cuts_are_the_default_and_earlier_block_outputs(tiny_vgg):
    assert tune.candidate_cuts(tiny_vgg) == ["block3_pool:0", "block2_pool:0", "block1_pool:0"]


def test_a_small_validation_split_is_scored_by_k_fold(monkeypatch):
    features, y, train, val = _problem()
    calls = []
    real = tune.fit_candidate

    def spy(candidate, x, labels, fit_rows, held_out, *args, **kwargs):
        calls.append(len(held_out))
        return real(candidate, x, labels, fit_rows, held_out, *args, **kwargs)

    monkeypatch.setattr(tune, "fit_candidate", spy)
    start = tune.Candidate("good:0", (), 0.0, True, 1e-3)
    trial = tune.score_candidate(start, features["good:0"], y, train[:60], val[:12], 3, 3)
    assert len(calls) == tune.FOLDS and sum(calls) == 72
    assert 0.0 <= trial.val_accuracy <= 1.0
    calls.clear()
    tune.score_candidate(start, features["good:0"], y, train, val, 3, 3)
    assert calls == [len(val)]
