"""The learning-curve extrapolator: calibrated on curves of its own families, honest about short ones."""

import numpy as np
import pytest

from predictors.learning_curve import CurveExtrapolator


def _curve(rng, rungs=8):
    top, start, rate = rng.uniform(0.5, 0.95), rng.uniform(0.05, 0.4), rng.uniform(0.2, 1.5)
    x = np.arange(1, rungs + 1, dtype=float)
    return x, top - (top - start) * np.exp(-rate * x) + rng.normal(0, 0.01, rungs)


def test_the_90_percent_interval_holds_about_90_percent_of_finals():
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(60):
        x, y = _curve(rng)
        for seen in (3, 5):
            e = CurveExtrapolator(noise_floor=0.01, samples=500).fit(x[:seen], y[:seen]).predict(x[-1], rng)
            inside.append(e.lower <= y[-1] <= e.upper)
    assert 0.75 <= np.mean(inside) <= 1.0


def test_fewer_points_give_a_wider_interval_and_the_same_seed_the_same_draws():
    rng = np.random.default_rng(1)
    x, y = _curve(rng)
    short = CurveExtrapolator(samples=500).fit(x[:2], y[:2]).predict(8, np.random.default_rng(5))
    long = CurveExtrapolator(samples=500).fit(x[:6], y[:6]).predict(8, np.random.default_rng(5))
    assert short.upper - short.lower > long.upper - long.lower
    again = CurveExtrapolator(samples=500).fit(x[:6], y[:6]).predict(8, np.random.default_rng(5))
    assert np.array_equal(long.samples, again.samples)
    assert 0.0 <= long.lower <= long.mean <= long.upper <= 1.0


@pytest.mark.parametrize("x, y", [([], []), ([1, 2], [0.5]), ([0, 1], [0.1, 0.2]), ([1, 2], [0.1, np.nan])])
def test_a_malformed_curve_is_refused(x, y):
    with pytest.raises(ValueError):
        CurveExtrapolator().fit(x, y)
