"""`elastiq status`: where a study stands, from the database alone."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.search.driver import front_and_hypervolume
from orchestrator.search.objectives import Objectives
from orchestrator.storage.schema import HypervolumeRow, connect, masked
from orchestrator.storage.study import (
    arch_key_of,
    objective_table,
    require_study,
    stored_config,
    trial_counts,
    unique_archs,
)


def study_status(url: str, name: str) -> dict[str, Any]:
    study = require_study(url, name)
    config = stored_config(study, url)
    objectives = Objectives.from_config(config.objectives, config.constraints)
    counts = trial_counts(study)
    table = objective_table(study, len(objectives.metrics))
    feasible = table.values[table.feasible]
    feasible_trials = table.trials[table.feasible]
    best = {}
    for k, (metric, direction) in enumerate(zip(objectives.metrics, objectives.directions, strict=True)):
        if len(feasible):
            i = int(np.argmax(feasible[:, k]) if direction == "maximize" else np.argmin(feasible[:, k]))
            trial = int(feasible_trials[i])
            best[metric] = {"value": float(feasible[i, k]), "trial": trial, "arch_key": arch_key_of(study, trial)}
    hypervolume, front_size = front_and_hypervolume(study, objectives, table)
    engine = connect(url, create=False)
    with Session(engine) as session:
        history = [(row.evaluations, row.hypervolume) for row in session.scalars(
            select(HypervolumeRow).where(HypervolumeRow.study == name).order_by(HypervolumeRow.id))]
    engine.dispose()
    return {
        "study": name, "storage": masked(url), "strategy": config.search.strategy, "target": config.target.name,
        "objectives": dict(config.objectives), "constraints": [str(c) for c in config.constraints],
        "trials": counts, "evaluations": len(table.trials), "budget": config.search.evaluations,
        "budget_used": len(table.trials) / config.search.evaluations, "feasible": len(feasible),
        "unique_archs": unique_archs(study),
        "best": best, "pareto_size": front_size, "hypervolume": hypervolume,
        "hypervolume_history": history,
    }


def format_status(status: dict[str, Any], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(status, indent=2, sort_keys=True)
    trials = status["trials"]
    lines = [f"study {status['study']} ({status['storage']}), strategy {status['strategy']}, "
             f"target {status['target']}",
             f"  evaluations {status['evaluations']} of {status['budget']} ({status['budget_used']:.0%}), "
             f"{status['feasible']} feasible, {status['unique_archs']} unique archs; trials: "
             + ", ".join(f"{k} {v}" for k, v in trials.items() if v),
             f"  Pareto front {status['pareto_size']}, hypervolume {status['hypervolume']:.4g}"]
    if status["constraints"]:
        lines.append("  constraints: " + ", ".join(status["constraints"]))
    for metric, best in status["best"].items():
        lines.append(f"  best {metric}: {best['value']:.6g} (trial {best['trial']}, arch {best['arch_key']})")
    return "\n".join(lines)
