"""Which of a study's trials an export ships: explicit trial numbers, or the front on evaluated accuracy and
measured latency, above the accuracy floor and within the front tolerance.

Where the search only predicted latency, the archs that could be on the front (predicted minus two standard
deviations) are measured first, beside drift probes, and stored as the target's measurements; the front is
taken on those measurements, never on predictions alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from orchestrator.config import StudyConfig
from orchestrator.execution.measuring import beside_probes, measure_and_store
from orchestrator.search.driver import SPLIT
from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import pareto_front
from orchestrator.storage.study import Evaluation
from predictors.measure import example_input, measure_beside_probes
from predictors.target import HardwareTarget
from search_space import Arch, InputError

log = logging.getLogger("elastiq.export")


class ExportError(InputError):
    """Nothing to export, or an export that fails its own verification."""


@dataclass(frozen=True)
class Selection:
    trials: tuple[int, ...] = ()  # explicit trial numbers; empty: the front
    max_latency_ms: float | None = None
    accuracy_floor: str | float | None = None  # "majority", "none" or a fraction; None: the config's
    front_tolerance: str | float | None = None  # "standard-error" or a fraction; None: the config's

    def describe(self) -> str:
        if self.trials:
            return "trials " + ", ".join(map(str, self.trials))
        return "Pareto front" + (f" under {self.max_latency_ms} ms" if self.max_latency_ms is not None else "")


@dataclass(frozen=True)
class AccuracyFloor:
    value: float
    source: str  # "majority" or "config"
    left_out: int  # evaluated archs at or below it


def accuracy_floor(config: StudyConfig, task, done: list[Evaluation] | None = None,
                   setting: str | float | None = None) -> AccuracyFloor | None:
    """The accuracy at or below which an arch is useless to ship (`setting`, else `export.accuracy_floor`):
    by default what always predicting the validation split's most common label scores."""
    if setting is None:
        setting = config.export.accuracy_floor
    if setting == "none":
        return None
    if setting == "majority":
        _, labels = task.split("val")
        value = float(torch.bincount(labels).max()) / max(1, len(labels))
    else:
        value = float(setting)
    left_out = 0 if done is None else len({e.arch.key for e in done if e.metrics.get("accuracy", np.inf) <= value})
    return AccuracyFloor(value, "majority" if setting == "majority" else "config", left_out)


def front_tolerance(config: StudyConfig, task, setting: str | float | None = None) -> Callable[[float], float] | None:
    """Accuracy -> the lead another arch needs over it to push it off the exported front (`setting`, else
    `export.front_tolerance`); None for the strict front."""
    if setting is None:
        setting = config.export.front_tolerance
    if setting == "standard-error":
        samples = max(1, len(task.split(SPLIT)[1]))  # the split the archs' accuracy was evaluated on
        return lambda accuracy: math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / samples)
    value = float(setting)
    return None if value == 0.0 else (lambda accuracy: value)


def choose(done: list[Evaluation], selection: Selection, objectives: Objectives, config: StudyConfig, engine,
           supernet, task, target: HardwareTarget, floor: AccuracyFloor | None,
           tolerance: Callable[[float], float] | None = None) -> list[Evaluation]:
    by_trial = {e.trial: e for e in done}
    if selection.trials:
        missing = [t for t in selection.trials if t not in by_trial]
        if missing:
            raise ExportError(f"study {config.study!r} has no completed trial {missing[0]}")
        return [by_trial[t] for t in dict.fromkeys(selection.trials)]
    unique = list({e.arch.key: e for e in reversed(done)}.values())[::-1]  # first trial of each arch
    if floor is not None:  # a model no better than always guessing the commonest label is of no use to anyone
        unique = [e for e in unique if e.metrics.get("accuracy", np.inf) > floor.value]
        if not unique:
            why = "always guessing the commonest label" if floor.source == "majority" else "export.accuracy_floor"
            raise ExportError(f"study {config.study!r}: every evaluated arch is at or below the accuracy floor "
                              f"{floor.value:.4f} ({why}); nothing is worth shipping (--accuracy-floor none, or "
                              f"export.accuracy_floor: none, ships them anyway)")
    if not objectives.needs_latency:
        return front([e for e in unique if e.feasible], objectives, selection, tolerance)
    # measure the front taken on optimistic latencies (measured where known), again until every arch on it
    # is measured: an arch the first round's measurements push off lets in one that was not measured yet
    measured: dict[str, float] = {}
    while True:
        current = [_with_latency(e, measured[e.arch.key], objectives, source="measured at export")
                   if e.arch.key in measured else _with_latency(e, _optimistic_latency(e.metrics), objectives)
                   for e in unique]
        candidates = front([e for e in current if e.feasible], objectives, selection, tolerance)
        unmeasured = [e for e in candidates if "latency_measured_ms" not in e.metrics]
        if not unmeasured:
            break
        measured.update(_measure_for_selection(unmeasured, config, engine, supernet, task, target))
    settled = [e for e in current if "latency_measured_ms" in e.metrics]
    chosen = front([e for e in settled if e.feasible], objectives, selection, tolerance)
    if not chosen:
        raise ExportError(f"study {config.study!r}: the {selection.describe()} is empty (no feasible trial with a "
                          f"measured latency{' under the bound' if selection.max_latency_ms is not None else ''})")
    return chosen


def _optimistic_latency(metrics: dict) -> float:
    if "latency_measured_ms" in metrics:
        return metrics["latency_measured_ms"]
    return max(0.0, metrics["latency_ms"] - 2 * metrics.get("latency_predicted_std_ms", 0.0))


def _with_latency(e: Evaluation, latency: float, objectives: Objectives, source: str | None = None) -> Evaluation:
    metrics = dict(e.metrics, latency_ms=latency)
    if source is not None:
        metrics["latency_measured_ms"] = latency
        metrics["latency_source"] = source
    return Evaluation(e.trial, e.arch, metrics, objectives.feasible(metrics), key=e.key)


def front(feasible: list[Evaluation], objectives: Objectives, selection: Selection,
          tolerance: Callable[[float], float] | None = None) -> list[Evaluation]:
    if selection.max_latency_ms is not None:
        feasible = [e for e in feasible if e.metrics.get("latency_ms", np.inf) <= selection.max_latency_ms]
    if not feasible:
        raise ExportError(f"the {selection.describe()} is empty: no feasible completed trial")
    values = objectives.minimized([e.metrics for e in feasible])
    if tolerance is None or "accuracy" not in objectives.metrics:
        kept = pareto_front(values)
    else:  # kept unless another is as good elsewhere and ahead on accuracy by more than the tolerance
        column = objectives.metrics.index("accuracy")
        others = [k for k in range(values.shape[1]) if k != column]
        kept = [i for i, e in enumerate(feasible)
                if not any(np.all(values[j, others] <= values[i, others])
                           and -values[j, column] > e.metrics["accuracy"] + tolerance(e.metrics["accuracy"])
                           for j in range(len(feasible)) if j != i)]
    return sorted((feasible[i] for i in kept), key=lambda e: e.trial)


def _measure_for_selection(unmeasured: list[Evaluation], config: StudyConfig, engine, supernet, task,
                           target: HardwareTarget) -> dict[str, float]:
    """The deployed models of archs whose latency was only predicted, measured beside drift probes (on the
    dataset's scale, as the search measures) and stored, so the next export (and search) reuse them."""
    log.info("measuring %d arch(s) whose latency the search only predicted", len(unmeasured))

    def measure_batch(todo: list[Arch], probes, _stored: int):
        inputs = example_input(task.spec, target)
        return measure_beside_probes(
            [target.deploy(supernet.extract(arch), inputs) for arch in todo],
            [target.deploy(supernet.extract(arch), inputs) for arch, _ in probes], [m for _, m in probes], inputs,
            target, config.measure.to_protocol(), np.random.default_rng(config.seed))

    outcome = measure_and_store(engine, target, [e.arch for e in unmeasured], beside_probes(measure_batch),
                                source="export")
    if outcome.refused is not None:
        raise ExportError(f"study {config.study!r}: latency of the candidates {outcome.refused}; export again "
                          f"when the machine is idle")
    return {key: m.latency_ms for key, m in outcome.latencies.items()}
