"""The schedulers that stop candidates early, behind Tune's one interface.

- `asha`: Ray Tune's `ASHAScheduler` on the front margin (`candidates`), one
  rung per time step: at each of its rungs a candidate goes on when its margin
  is in the top 1/`reduction_factor` of those that reached that rung.
- `lc`: `LearningCurveStopper`, a Tune scheduler over `DominanceRule`: every
  result extends the candidate's curve; a candidate stops once, with
  probability >= `confidence`, it ends no more than `min_gain` (0: at all)
  above the best of the candidates no more costly: every final drawn from its
  extrapolated curve (the learning-curve PFN, `predictors.curve_pfn`, or the
  parametric families, `predictors.learning_curve`) or, for a candidate that
  has ended, its last value. A curve with a non-finite value is never judged,
  nor judges another: that candidate trains on (said once in the log).
- `full`: Tune's FIFO scheduler: every candidate trains its whole budget.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from predictors.curve_pfn.extrapolator import PFNExtrapolator, loaded_pfn
from predictors.learning_curve import CurveExtrapolator

log = logging.getLogger("elastiq")


@dataclass
class _Curve:
    cost: float
    points: dict[int, float] = field(default_factory=dict)  # rung -> accuracy
    ended: bool = False
    broken: bool = False  # a non-finite value: never judged by its curve

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        rungs = sorted(self.points)
        return np.array(rungs, dtype=float), np.array([self.points[r] for r in rungs])


class DominanceRule:
    """Which candidates are confidently dominated, from their partial curves (no Tune in here)."""

    def __init__(self, rungs: int, grace_rungs: int, confidence: float, seed: int, min_gain: float = 0.0,
                 samples: int = 2000, extrapolator: PFNExtrapolator | CurveExtrapolator | None = None,
                 starts: dict[str, float] | None = None):
        self.rungs, self.grace_rungs, self.confidence, self.min_gain = rungs, grace_rungs, confidence, min_gain
        self.extrapolator = extrapolator if extrapolator is not None else PFNExtrapolator(samples=samples)
        # each candidate's inherited accuracy, the first point of its curve: its value before fine-tuning
        self.starts = {k: float(v) for k, v in (starts or {}).items() if math.isfinite(float(v))}
        self.seed = seed
        self.curves: dict[str, _Curve] = {}
        self._finals: dict[tuple[str, int], np.ndarray] = {}  # (key, points): draws, refitted only on news

    def observe(self, key: str, cost: float, rung: int, accuracy: float) -> None:
        curve = self.curves.setdefault(key, _Curve(cost))
        curve.points[int(rung)] = float(accuracy)
        if not math.isfinite(float(accuracy)) and not curve.broken:
            curve.broken = True
            log.warning("candidate %s reported a non-finite accuracy (%s) at rung %d: it trains on, not judged by "
                        "its curve", key[:8], accuracy, int(rung))

    def end(self, key: str) -> None:
        if key in self.curves:
            self.curves[key].ended = True

    def final(self, key: str) -> np.ndarray:
        """Draws of the candidate's final accuracy (its last value once it has ended)."""
        curve = self.curves[key]
        x, y = curve.values()
        if curve.ended or x[-1] >= self.rungs:
            return np.full(self.extrapolator.samples, y[-1])
        points = len(x)
        cached = self._finals.get((key, points))
        if cached is None:
            rng = np.random.default_rng([self.seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16), len(x)])
            at = self.rungs
            if key in self.starts:  # the start is the curve's first point: every point moves one on
                x, y, at = np.concatenate([[1.0], x + 1]), np.concatenate([[self.starts[key]], y]), at + 1
            cached = self.extrapolator.fit(x, y).sample(at, rng, self.extrapolator.samples)
            self._finals[(key, points)] = cached
        return cached

    def dominated(self, key: str) -> str | None:
        """The cheaper candidate that makes `key` not worth its cost, else None: stopped once, with probability
        >= `confidence`, `key` ends no more than `min_gain` above the best final of the candidates no more
        costly (each final drawn from its extrapolated curve, or its last value once it has ended)."""
        curve = self.curves[key]
        if len(curve.points) < self.grace_rungs or curve.ended or curve.broken or max(curve.points) >= self.rungs:
            return None  # too young to judge, its training is over, or its curve cannot be extrapolated
        rivals = [other for other, their in self.curves.items()
                  if other != key and their.cost <= curve.cost and their.points and not their.broken]
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


def curve_extrapolator(curve_model: str, weights: str | None = None, samples: int = 2000):
    """The `lc` scheduler's extrapolator (the PFN's weights loaded and checked here, once)."""
    if curve_model == "families":
        # a curve's noise is its own residual spread: its rungs are scored on the same validation examples, so
        # their errors are correlated and the binomial spread of one score overstates it
        # (bench/finetune/finetune_stage.py)
        return CurveExtrapolator(samples=samples)
    loaded_pfn(weights)
    return PFNExtrapolator(weights, samples=samples)


def make_scheduler(name: str, rungs: int, grace_rungs: int, reduction_factor: int, confidence: float,
                   min_gain: float, seed: int, curve_model: str = "pfn", curve_model_weights: str | None = None,
                   starts: dict[str, float] | None = None) -> TrialScheduler:
    if name == "asha":
        return ASHAScheduler(time_attr="rung", metric="margin", mode="max", max_t=rungs, grace_period=grace_rungs,
                             reduction_factor=reduction_factor)
    if name == "lc":
        extrapolator = curve_extrapolator(curve_model, curve_model_weights)
        return LearningCurveStopper(DominanceRule(rungs, grace_rungs, confidence, seed, min_gain,
                                                  extrapolator=extrapolator, starts=starts))
    return FIFOScheduler()
