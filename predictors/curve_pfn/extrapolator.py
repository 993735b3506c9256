"""`PFNExtrapolator`: a curve's value at a later progress, as the PFN's predictive distribution.

The same interface as `predictors.learning_curve.CurveExtrapolator` (scikit-learn style: `fit(x, y)` stores
one curve, `sample(at, rng, count)` draws its value at `at`, `predict` summarizes). `x` is progress in any
unit > 0 (rungs); the network sees x / at, so a budget of any number of rungs maps onto its (0, 1]. A curve
longer than the network was trained on is thinned to evenly spaced points, its last always kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from predictors.curve_pfn.network import BarDistribution, CurvePFN
from predictors.curve_pfn.weights import load_pfn
from predictors.learning_curve import Extrapolation, checked_curve

_LOADED: dict[str, tuple[CurvePFN, BarDistribution, dict]] = {}  # one copy per process and folder


def loaded_pfn(directory: Path | str | None = None) -> tuple[CurvePFN, BarDistribution, dict]:
    key = str(Path(directory).resolve()) if directory is not None else ""
    if key not in _LOADED:
        _LOADED[key] = load_pfn(directory)
    return _LOADED[key]


class PFNExtrapolator:
    def __init__(self, weights: Path | str | None = None, samples: int = 2000, level: float = 0.9):
        self.weights = weights
        self.samples = samples
        self.level = level

    def fit(self, x, y) -> PFNExtrapolator:
        x, y = checked_curve(x, y)
        self.model_, self.bars_, manifest = loaded_pfn(self.weights)
        longest = int(manifest["training"]["max_rungs"]) - 1  # the most points it saw before a query
        if len(x) > longest:
            keep = np.unique(np.round(np.linspace(0, len(x) - 1, longest)).astype(int))
            x, y = x[keep], y[keep]
        self.x_, self.y_ = x, y
        self._logits: dict[float, torch.Tensor] = {}
        return self

    def logits(self, at: float) -> torch.Tensor:
        """The bar distribution's logits of the change from the last value to the value at `at` (>= every x)."""
        if at not in self._logits:
            if at < self.x_[-1]:
                raise ValueError(f"extrapolating to {at}, before the curve's last point {self.x_[-1]}")
            progress = torch.tensor(self.x_ / at, dtype=torch.float32).unsqueeze(0)
            values = torch.tensor(self.y_, dtype=torch.float32).unsqueeze(0)
            with torch.no_grad():
                self._logits[at] = self.model_(progress, values, torch.ones(1, 1))[0, 0]
        return self._logits[at]

    def log_density(self, at: float, value: float) -> float:
        change = torch.tensor(float(value) - self.y_[-1], dtype=torch.float64)
        return float(self.bars_.log_density(self.logits(at), change))

    def sample(self, at: float, rng: np.random.Generator, count: int) -> np.ndarray:
        """Draws of the value at `at`: a bucket by its probability, then uniformly inside it."""
        probs = torch.softmax(self.logits(at).double(), dim=-1).numpy()
        bucket = rng.choice(len(probs), size=count, p=probs / probs.sum())
        borders = self.bars_.borders.numpy()
        changes = borders[bucket] + rng.uniform(0, 1, count) * (borders[bucket + 1] - borders[bucket])
        return np.clip(self.y_[-1] + changes, 0.0, 1.0)

    def predict(self, at: float, rng: np.random.Generator) -> Extrapolation:
        draws = self.sample(at, rng, self.samples)
        tail = (1 - self.level) / 2
        logits = self.logits(at)
        last = float(self.y_[-1])
        lower, upper = (last + float(self.bars_.quantile(logits, q)) for q in (tail, 1 - tail))
        return Extrapolation(last + float(self.bars_.mean(logits)), float(draws.std()), lower, upper, self.level,
                             draws)
