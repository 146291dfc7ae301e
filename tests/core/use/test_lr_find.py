"""The learning-rate finder: a sane suggestion on separable features, divergence stops the sweep."""

from __future__ import annotations

import numpy as np
import pytest

from tlstudio.core.spec.errors import Cancelled, DataError, UserError
from tlstudio.core.spec.recipe import HeadSpec
from tlstudio.core.use import lr_find


def _features(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (60, 16)) + 3 * np.eye(16)[c] for c in range(3)]).astype("float32")
    return x, np.repeat(np.arange(3), 60)


def test_sweep_suggests_a_sane_rate():
    x, y = _features()
    curve = lr_find.find_learning_rate(x, y, 3, HeadSpec(batch_norm=False), steps=60)
    assert 1e-5 <= curve.suggestion <= 1.0
    assert curve.rates == tuple(sorted(curve.rates))
    assert min(curve.smoothed) < curve.smoothed[0]
    assert curve.to_dict()["suggestion"] == curve.suggestion


def test_divergence_ends_the_sweep_early():
    x, y = _features()
    curve = lr_find.find_learning_rate(x, y, 3, HeadSpec(batch_norm=False), optimizer="sgd", end=1e6, steps=60)
    assert curve.diverged and len(curve.rates) < 60 and curve.rates[-1] < 1e6


def test_a_loss_that_is_nan_from_the_start_is_a_clear_error():
    x, y = _features()
    x[:, 0] = np.nan
    with pytest.raises(DataError, match="diverged at once"):
        lr_find.find_learning_rate(x, y, 3, HeadSpec(batch_norm=False), steps=20)


def test_valley_and_steepest_on_a_known_curve():
    rates = np.logspace(-6, 0, 61)
    losses = 1.0 / (1.0 + np.exp(3 * (np.log10(rates) + 3)))
    losses[50:] = np.linspace(losses[49], 5, 11)
    assert 1e-4 < lr_find.valley(rates, losses) < 1e-1
    assert lr_find.steepest(rates, losses) == pytest.approx(1e-3, rel=0.3)


def test_stop_and_bad_settings():
    x, y = _features()
    with pytest.raises(Cancelled):
        lr_find.find_learning_rate(x, y, 3, HeadSpec(), should_stop=lambda: True)
    with pytest.raises(UserError, match="start < end"):
        lr_find.find_learning_rate(x, y, 3, HeadSpec(), start=1.0, end=0.1)
