"""A study's fine-tuned results as the delivery reads them: the current run's last rung per arch.

An arch that was fine-tuned takes the validation accuracy of its last recorded
rung (finished or stopped early: its weights are that rung's checkpoint) where
that is at least its inherited accuracy; where fine-tuning made it worse on the
validation split, and for every other arch, the inherited weights stay. The fine-tuned front is the front of
that mix, on the same objectives and constraints as the search's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.finetuning import CandidateRecord, current_run, load_run
from orchestrator.storage.study import REFERENCE_ATTR, Evaluation


@dataclass(frozen=True)
class FinetunedRun:
    run_key: str
    settings: dict[str, Any]
    candidates: dict[str, CandidateRecord]  # by arch key

    def trained(self) -> dict[str, CandidateRecord]:
        return {key: c for key, c in self.candidates.items() if c.rungs}

    def steps_trained(self) -> int:
        return sum(c.last.steps for c in self.candidates.values() if c.rungs)

    def counts(self) -> dict[str, int]:
        ended = [c.ended for c in self.candidates.values()]
        return {"candidates": len(ended), "finished": ended.count("finished"), "stopped": ended.count("stopped"),
                "unfinished": ended.count(None)}


def finetuned_run(study: optuna.Study, engine) -> FinetunedRun | None:
    run = current_run(study)
    if run is None:
        return None
    return FinetunedRun(run["run_key"], run["settings"], load_run(engine, study.study_name, run["run_key"]))


def with_finetuned(done: list[Evaluation], run: FinetunedRun | None, objectives: Objectives) -> list[Evaluation]:
    """The evaluations, each fine-tuned arch's accuracy replaced by its last rung's where that is no worse
    (`accuracy_inherited` keeps the search's; `finetuned` says from which rung)."""
    trained = run.trained() if run is not None else {}
    merged = []
    for e in done:
        record = trained.get(e.key)
        if record is None or record.last.accuracy < e.metrics["accuracy"]:
            merged.append(e)
            continue
        last = record.last
        metrics = dict(e.metrics, accuracy=last.accuracy, accuracy_inherited=e.metrics["accuracy"],
                       finetuned={"run_key": run.run_key, "rung": last.rung, "steps": last.steps,
                                  "ended": record.ended, "checkpoint": last.checkpoint,
                                  "checkpoint_sha256": last.checkpoint_sha256})
        merged.append(Evaluation(e.trial, e.arch, metrics, objectives.feasible(metrics), key=e.key))
    return merged


def front_summary(done: list[Evaluation], objectives: Objectives, reference: list[float]) -> dict[str, Any]:
    """Size, hypervolume and trials of the feasible front of `done` (one evaluation per arch)."""
    unique = list({e.key: e for e in reversed(done)}.values())
    feasible = [e for e in unique if e.feasible]
    if not feasible:
        return {"size": 0, "hypervolume": 0.0, "trials": []}
    values = objectives.minimized([e.metrics for e in feasible])
    front = pareto_front(values)
    reference = np.asarray(reference) * objectives.signs
    return {"size": len(front), "hypervolume": hypervolume(values, reference),
            "trials": sorted(feasible[i].trial for i in front)}


def study_reference(study: optuna.Study) -> list[float]:
    return list(study.user_attrs[REFERENCE_ATTR])
