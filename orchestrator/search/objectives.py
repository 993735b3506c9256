"""Objectives and constraints of a study, as numbers the search minimizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.config import Constraint
from supernet.tasks import QUALITY_DIRECTIONS


@dataclass(frozen=True)
class Objectives:
    metrics: tuple[str, ...]
    directions: tuple[str, ...]  # "maximize" | "minimize", as Optuna spells them
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def from_config(cls, objectives: dict[str, str], constraints) -> Objectives:
        return cls(tuple(objectives), tuple(objectives.values()), tuple(constraints))

    @property
    def signs(self) -> np.ndarray:
        return np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [float(metrics[m]) for m in self.metrics]

    def minimized(self, rows: list[dict[str, float]]) -> np.ndarray:
        """(n, k) objective values with maximized ones negated."""
        if not rows:
            return np.zeros((0, len(self.metrics)))
        return np.array([self.values(r) for r in rows]) * self.signs

    def violations(self, metrics: dict[str, float]) -> list[float]:
        """Optuna's convention: <= 0 means satisfied."""
        return [(metrics[c.metric] - c.bound) if c.op == "<=" else (c.bound - metrics[c.metric])
                for c in self.constraints]

    def feasible(self, metrics: dict[str, float]) -> bool:
        return all(v <= 0 for v in self.violations(metrics))

    @property
    def quality(self) -> str:
        """The task's quality metric among the objectives and constraints (accuracy where none is)."""
        named = [*self.metrics, *(c.metric for c in self.constraints)]
        return next((m for m in named if m in QUALITY_DIRECTIONS), "accuracy")

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.metrics or any(c.metric == "latency_ms" for c in self.constraints)
