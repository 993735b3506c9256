"""The schedulers that stop candidates early, behind Tune's one interface.

- `asha`: Ray Tune's `ASHAScheduler` on the front margin (`candidates`), one
  rung per time step: at each of its rungs a candidate goes on when its margin
  is in the top 1/`reduction_factor` of those that reached that rung.
- `lc`: `LearningCurveStopper`, a Tune scheduler over `DominanceRule`: every
  result extends the candidate's curve; a candidate stops once, with
  probability >= `confidence`, it ends no more than `min_gain` (0: at all)
  above the best of the candidates no more costly: every final drawn from its
  extrapolated curve (`predictors.learning_curve`) or, for a candidate that has
  ended, its last value.
- `full`: Tune's FIFO scheduler: every candidate trains its whole budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from predictors.learning_curve import CurveExtrapolator


@dataclass
class _Curve:
    cost: float
    points: dict[int, float] = field(default_factory=dict)  # rung -> accuracy
    ended: bool = False

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        rungs = sorted(self.points)
        return np.array(rungs, dtype=float), np.array([self.points[r] for r in rungs])


class DominanceRule:
    """Which candidates are confidently dominated, from their partial curves (no Tune in here)."""

    def __init__(self, rungs: int, grace_rungs: int, confidence: float, seed: int, min_gain: float = 0.0,
                 samples: int = 2000):
        self.rungs, self.grace_rungs, self.confidence, self.min_gain = rungs, grace_rungs, confidence, min_gain
        # a curve's noise is its own residual spread: its rungs are scored on the same validation examples, so
        # their errors are correlated and the binomial spread of one score overstates it (bench/finetune_stage.py)
        self.extrapolator = CurveExtrapolator(samples=samples)
        self.seed = seed
        self.curves: dict[str, _Curve] = {}
        self._finals: dict[tuple[str, int], np.ndarray] = {}  # (key, points): draws, refitted only on news

    def observe(self, key: str, cost: float, rung: int, accuracy: float) -> None:
        curve = self.curves.setdefault(key, _Curve(cost))
        curve.points[int(rung)] = float(accuracy)

    def end(self, key: str) -> None:
        if key in self.curves:
            self.curves[key].ended = True

    def final(self, key: str) -> np.ndarray:
        """Draws of the candidate's final accuracy (its last value once it has ended)."""
        curve = self.curves[key]
        x, y = curve.values()
        if curve.ended or x[-1] >= self.rungs:
            return np.full(self.extrapolator.samples, y[-1])
        cached = self._finals.get((key, len(x)))
        if cached is None:
            rng = np.random.default_rng([self.seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16), len(x)])
            cached = self.extrapolator.fit(x, y).sample(self.rungs, rng, self.extrapolator.samples)
            self._finals[(key, len(x))] = cached
        return cached

    def dominated(self, key: str) -> str | None:
        """The cheaper candidate that makes `key` not worth its cost, else None: stopped once, with probability
        >= `confidence`, `key` ends no more than `min_gain` above the best final of the candidates no more
        costly (each final drawn from its extrapolated curve, or its last value once it has ended)."""
        curve = self.curves[key]
        if len(curve.points) < self.grace_rungs or curve.ended or max(curve.points) >= self.rungs:
            return None  # too young to judge, or its training is over
        rivals = [other for other, their in self.curves.items()
                  if other != key and their.cost <= curve.cost and their.points]
        if not rivals:
            return None
        mine = self.final(key)
        finals = [self.final(other) for other in rivals]
        best = np.max(finals, axis=0)  # independent draws: the best of the rivals in each draw
        if np.mean(mine <= best + self.min_gain) < self.confidence:
            return None
        return rivals[int(np.argmax([np.median(f) for f in finals]))]


class LearningCurveStopper(FIFOScheduler):
    """Tune's FIFO order, with a stop once a candidate's curve is confidently dominated."""

    def __init__(self, rule: DominanceRule):
        super().__init__()
        self.rule = rule
        self.stopped: dict[str, str] = {}  # key -> the key that dominated it

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        key = result["arch_key"]
        self.rule.observe(key, result["cost"], result["rung"], result["accuracy"])
        if result.get("replayed"):
            return TrialScheduler.CONTINUE  # decided on the whole curve it had, once replayed
        by = self.rule.dominated(key)
        if by is None:
            return TrialScheduler.CONTINUE
        self.stopped[key] = by
        self.rule.end(key)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and "arch_key" in result:
            self.rule.end(result["arch_key"])

    def debug_string(self) -> str:
        return f"learning-curve extrapolation: {len(self.stopped)} stopped as dominated"


def make_scheduler(name: str, rungs: int, grace_rungs: int, reduction_factor: int, confidence: float,
                   min_gain: float, seed: int) -> TrialScheduler:
    if name == "asha":
        return ASHAScheduler(time_attr="rung", metric="margin", mode="max", max_t=rungs, grace_period=grace_rungs,
                             reduction_factor=reduction_factor)
    if name == "lc":
        return LearningCurveStopper(DominanceRule(rungs, grace_rungs, confidence, seed, min_gain))
    return FIFOScheduler()
