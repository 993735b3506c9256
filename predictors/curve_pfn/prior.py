"""LC-PFN's prior over learning curves, sampled in batches with an explicit generator.

As in LC-PFN (`lcpfn.domhan_prior.sample_prior_comb`, the "peaked" prior): a
curve is a sum of pow3, ilog2 and Janoschek curves, each with a weight
uniform in [0, 1] and parameters from their peaked priors, over epochs 1 ..
`epochs`; a curve that does not end above its start, leaves [0, 1] or is not
finite is drawn again; each observation gets Gaussian noise whose standard
deviation is exp(N(`noise_log_mean`, 1)) per curve. LC-PFN's `noise_log_mean`
is -4 (a median of 1.8 points); elastiq's curves are accuracies on one
validation split of hundreds to thousands of examples, whose binomial spread
is under a point (sqrt(0.9 * 0.1 / 1600) = e^-4.9), so the shipped network was
trained with -5 (a median of 0.7 point, the same spread around it).

elastiq observes a curve at the rungs of a budget, not at every epoch: rung
r of R sits at epoch r * E / R, E drawn log-uniformly in [R, `epochs`] (a
budget's rungs may cover a curve's steep start or only its tail), and the
network sees the progress r / R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPOCHS = 100  # LC-PFN's curve length


def _pow3(x, c, a, alpha):
    return c - a * np.power(x, -alpha)


def _ilog2(x, c, a):
    return c - a / np.log(x + 1)


def _janoschek(x, a, beta, k, delta):
    return a - (a - beta) * np.exp(-k * np.power(x, delta))


def _peaked_parameters(rng: np.random.Generator, n: int) -> dict[str, tuple[np.ndarray, ...]]:
    """LC-PFN's peaked parameter priors, one column per curve."""
    return {
        "pow3": (rng.uniform(0, 1.25, n), rng.uniform(-0.6, 0.6, n), rng.lognormal(0, 2, n)),  # c, a, alpha
        "ilog2": (rng.uniform(0, 1, n), rng.uniform(-0.5, 0.5, n)),  # c, a
        "janoschek": (rng.uniform(0, 1, n), rng.uniform(0, 2, n), rng.lognormal(-2, 1, n),
                      rng.lognormal(0, 0.5, n)),  # a, beta, k, delta
    }


_FAMILIES = {"pow3": _pow3, "ilog2": _ilog2, "janoschek": _janoschek}


def noiseless_curves(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Curves of the prior at epochs `x` (shape (n, points), each row its own epochs; the last column is each
    curve's end), redrawn until every row ends above its start and stays in [0, 1]."""
    n = x.shape[0]
    curves = np.empty_like(x, dtype=float)
    todo = np.arange(n)
    while len(todo):
        m = len(todo)
        weights = rng.uniform(0, 1, (len(_FAMILIES), m))
        parameters = _peaked_parameters(rng, m)
        xs = x[todo]
        with np.errstate(all="ignore"):
            y = sum(w[:, None] * f(xs, *(p[:, None] for p in parameters[name]))
                    for w, (name, f) in zip(weights, _FAMILIES.items(), strict=True))
            # the start is judged at epoch 1, as LC-PFN, whether or not the rungs observe it
            start = sum(w * f(np.ones(m), *parameters[name])
                        for w, (name, f) in zip(weights, _FAMILIES.items(), strict=True))
            ok = (np.isfinite(y).all(axis=1) & np.isfinite(start) & (y[:, -1] > start)
                  & (y >= 0).all(axis=1) & (y <= 1).all(axis=1) & (start >= 0) & (start <= 1))
        curves[todo[ok]] = y[ok]
        todo = todo[~ok]
    return curves


@dataclass(frozen=True)
class CurveBatch:
    progress: np.ndarray  # (n, rungs): r / R
    values: np.ndarray  # (n, rungs): noisy observations
    noiseless: np.ndarray


def sample_curves(rng: np.random.Generator, n: int, rungs: int, epochs: int = EPOCHS,
                  noise_log_mean: float = -5.0) -> CurveBatch:
    """`n` curves of the prior, each observed at the `rungs` rungs of its budget."""
    if rungs < 1 or n < 1:
        raise ValueError("at least one curve of at least one rung")
    span = np.exp(rng.uniform(np.log(min(rungs, epochs)), np.log(epochs), n))  # E: the budget in epochs
    progress = np.arange(1, rungs + 1) / rungs
    x = np.maximum(span[:, None] * progress[None, :], 1.0)
    y = noiseless_curves(rng, x)
    noise = np.exp(rng.normal(noise_log_mean, 1, n))
    return CurveBatch(np.broadcast_to(progress, (n, rungs)).copy(), y + rng.normal(0, 1, y.shape) * noise[:, None], y)
