"""Learning-curve extrapolation: a candidate's final accuracy, with uncertainty, from its partial curve.

An offline stand-in for LC-PFN (Adriaensen et al., *Efficient Bayesian Learning
Curve Extrapolation using Prior-Data Fitted Networks*), whose pretrained network
cannot be downloaded here: the parametric families of its prior (pow3,
Janoschek, log-power) are each fitted to the curve by bounded least squares;
each fit's parameters get a Laplace (Gauss-Newton) covariance, carried to the
predicted value by the delta method; the families are mixed by their BIC
weights; the predictive distribution of the final value is sampled from that
mixture of normals, each with the evaluation's own noise added. The noise is never
taken below the binomial spread of the curve's accuracy on a validation split
of `eval_size` examples (sqrt(p (1 - p) / n), p the curve's mean), nor below
`noise_floor`.

`x` is progress in any unit (rungs, steps) > 0; `y` an accuracy in [0, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, least_squares


def _pow3(x, c, a, alpha):
    return c - a * np.power(x, -alpha)


def _janoschek(x, top, start, kappa, delta):
    return top - (top - start) * np.exp(-kappa * np.power(x, delta))


def _log_power(x, top, b, c):
    return top / (1.0 + np.power(x / np.exp(b), -c))


@dataclass(frozen=True)
class Family:
    name: str
    function: object
    initial: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def __call__(self, x, params):
        return self.function(x, *params)


FAMILIES = (
    Family("pow3", _pow3, (0.9, 0.5, 0.5), (0.0, 0.0, 0.0), (1.0, 1.0, 5.0)),
    Family("janoschek", _janoschek, (0.9, 0.1, 0.5, 1.0), (0.0, 0.0, 1e-3, 0.05), (1.0, 1.0, 20.0, 5.0)),
    Family("log_power", _log_power, (0.9, 0.0, 1.0), (0.0, -5.0, 0.05), (1.0, 10.0, 10.0)),
)


@dataclass(frozen=True)
class FamilyFit:
    family: Family
    params: np.ndarray
    covariance: np.ndarray
    sigma: float  # the curve's noise around this fit, at least the noise floor
    weight: float


@dataclass(frozen=True)
class Extrapolation:
    mean: float
    std: float
    lower: float  # the central `level` interval
    upper: float
    level: float
    samples: np.ndarray  # draws of the final value (what a stopper compares curves with)


def checked_curve(x, y) -> tuple[np.ndarray, np.ndarray]:
    """A learning curve's points as float arrays (ValueError unless one or more finite points, x > 0)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 1:
        raise ValueError("a learning curve is one or more (x, y) points of the same length")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x <= 0):
        raise ValueError("a learning curve's x must be positive and its values finite")
    return x, y


class CurveExtrapolator:
    """scikit-learn style: the constructor stores settings, `fit(x, y)` fits one curve,
    `predict(at, rng)` samples the value at `at`."""

    def __init__(self, eval_size: int | None = None, noise_floor: float = 1e-3, samples: int = 2000,
                 level: float = 0.9, ridge: float = 1e-4):
        self.eval_size = eval_size
        self.noise_floor = noise_floor
        self.samples = samples
        self.level = level
        self.ridge = ridge

    def fit(self, x, y) -> CurveExtrapolator:
        x, y = checked_curve(x, y)
        if not 0 < self.noise_floor < 1 or not 0 < self.level < 1 or self.samples < 10 or \
                (self.eval_size is not None and self.eval_size < 1):
            raise ValueError("noise_floor and level must lie in (0, 1), samples at least 10, eval_size at least 1")
        self.x_, self.y_ = x, np.clip(y, 0.0, 1.0)
        self.floor_ = self.noise_floor
        if self.eval_size is not None:
            p = float(self.y_.mean())
            self.floor_ = max(self.noise_floor, float(np.sqrt(p * (1 - p) / self.eval_size)))
        fits = [self._fit_family(family) for family in FAMILIES]
        scores = np.array([score for _, score in fits])
        weights = np.exp(-0.5 * (scores - scores.min()))
        self.fits_ = [FamilyFit(f.family, f.params, f.covariance, f.sigma, float(w))
                      for (f, _), w in zip(fits, weights / weights.sum(), strict=True)]
        return self

    def _fit_family(self, family: Family) -> tuple[FamilyFit, float]:
        x, y, n, k = self.x_, self.y_, len(self.x_), len(family.initial)
        initial = np.clip(np.array(family.initial, dtype=float), family.lower, family.upper)
        initial[0] = max(initial[0], min(1.0, float(y.max())))  # the asymptote starts at or above the best value

        def residuals(params):  # a weak pull to the start point keeps short curves' fits identifiable
            return np.concatenate([family(x, params) - y, np.sqrt(self.ridge) * (params - initial)])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            result = least_squares(residuals, initial, bounds=(family.lower, family.upper), method="trf")
        params = result.x
        squared = float(np.sum((family(x, params) - y) ** 2))
        sigma = max(self.floor_, np.sqrt(squared / max(n - k, 1)))
        jacobian = result.jac[:n]
        # a unit-variance prior on each parameter: what the curve does not pin down stays uncertain
        covariance = np.linalg.inv(jacobian.T @ jacobian / sigma**2 + np.eye(k))
        # BIC on the noise-floored variance: with fewer points than parameters every family fits exactly,
        # and the floor keeps them from being told apart by noise alone
        score = n * np.log(max(squared / n, self.floor_**2)) + k * np.log(max(n, 2))
        return FamilyFit(family, params, covariance, sigma, 0.0), float(score)

    def predict(self, at: float, rng: np.random.Generator) -> Extrapolation:
        """The value at progress `at`, drawn from the families' mixture."""
        draws = self.sample(at, rng, self.samples)
        tail = (1 - self.level) / 2
        lower, upper = np.quantile(draws, [tail, 1 - tail])
        return Extrapolation(float(draws.mean()), float(draws.std()), float(lower), float(upper), self.level, draws)

    def sample(self, at: float, rng: np.random.Generator, count: int) -> np.ndarray:
        """Draws of the value at `at`: a family by its weight, then its linearized (delta-method) predictive
        normal, the parameters' uncertainty and the evaluation's noise together."""
        weights = np.array([f.weight for f in self.fits_])
        chosen = rng.choice(len(self.fits_), size=count, p=weights)
        draws = np.empty(count)
        for i, fit in enumerate(self.fits_):
            where = np.flatnonzero(chosen == i)
            if len(where):
                mean, std = self._predictive(fit, float(at))
                draws[where] = rng.normal(mean, std, size=len(where))
        return np.clip(draws, 0.0, 1.0)

    def log_density(self, at: float, value: float) -> float:
        """log p(value at `at`) under the families' mixture of predictive normals."""
        terms = []
        for fit in self.fits_:
            mean, std = self._predictive(fit, float(at))
            terms.append(np.log(max(fit.weight, 1e-300)) - 0.5 * ((value - mean) / std) ** 2
                         - np.log(std * np.sqrt(2 * np.pi)))
        return float(np.logaddexp.reduce(terms))

    @staticmethod
    def _predictive(fit: FamilyFit, at: float) -> tuple[float, float]:
        x = np.array([at])
        mean = float(fit.family(x, fit.params)[0])
        gradient = np.empty(len(fit.params))
        for j in range(len(fit.params)):  # central differences, inside the bounds
            step = 1e-5 * max(1.0, abs(fit.params[j]))
            up, down = fit.params.copy(), fit.params.copy()
            up[j] = min(up[j] + step, fit.family.upper[j])
            down[j] = max(down[j] - step, fit.family.lower[j])
            gradient[j] = (fit.family(x, up)[0] - fit.family(x, down)[0]) / max(up[j] - down[j], 1e-12)
        variance = float(gradient @ fit.covariance @ gradient) + fit.sigma**2
        return mean, float(np.sqrt(max(variance, 0.0)))
