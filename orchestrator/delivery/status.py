"""`elastiq status`: where a study stands, from the database alone."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from orchestrator.finetune.results import finetuned_run, front_summary, study_reference, with_finetuned
from orchestrator.search.front import front_and_hypervolume
from orchestrator.search.objectives import Objectives
from orchestrator.storage.history import hypervolume_history
from orchestrator.storage.latency import stored_latencies
from orchestrator.storage.predictor_store import latest_scores
from orchestrator.storage.schema import connect, masked
from orchestrator.storage.study import (
    arch_key_of,
    evaluations,
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
    history = hypervolume_history(engine, name)
    try:
        finetune = _finetune_status(study, engine, objectives)
        latency = _latency_status(engine, config)
    finally:
        engine.dispose()
    return {
        "study": name, "storage": masked(url), "strategy": config.search.strategy, "target": config.target.name,
        "objectives": dict(config.objectives), "constraints": [str(c) for c in config.constraints],
        "trials": counts, "evaluations": len(table.trials), "budget": config.search.evaluations,
        "budget_used": len(table.trials) / config.search.evaluations, "feasible": len(feasible),
        "unique_archs": unique_archs(study),
        "best": best, "pareto_size": front_size, "hypervolume": hypervolume,
        "hypervolume_history": history, "finetune": finetune, "latency": latency,
    }


def _latency_status(engine, config) -> dict[str, Any]:
    """The target's latency dataset (how many measured, how many flagged and why) and the latency predictor
    last fitted on it, with its cross-validated error."""
    target = config.target.to_target()
    stored = list(stored_latencies(engine, target).values())
    measured = [r.measurement for r in stored]
    sources = Counter(r.source or "measure" for r in stored)  # stored before schema 3 without one: measured alone
    scores = latest_scores(engine, config.study, "latency", target.name)
    gaps = [m.gap for m in measured if m.flagged and m.gap is not None]
    return {"target": target.name, "measured_on": target.measured_on, "measurements": len(measured),
            "measurements_by_source": dict(sorted(sources.items())),
            "flagged": sum(m.flagged for m in measured),
            "flagged_largest_gap_pct": 100 * max(gaps) if gaps else None,
            "predictor": None if scores is None else {"model": scores.chosen, "measurements": scores.n_train,
                                                      "cv_mape_pct": scores.chosen_scores["mape"],
                                                      "cv_kendall_tau": scores.chosen_scores["kendall_tau"]}}


def _finetune_status(study, engine, objectives: Objectives) -> dict[str, Any] | None:
    """The current fine-tuning run: its settings, how far it went, and its front beside the inherited one."""
    run = finetuned_run(study, engine)
    if run is None:
        return None
    done = evaluations(study)
    reference = study_reference(study)
    tuned = with_finetuned(done, run, objectives)
    front = front_summary(tuned, objectives, reference)
    by_trial = {e.trial: e for e in tuned}
    return {"run_key": run.run_key, "settings": run.settings, **run.counts(),
            "steps_trained": run.steps_trained(), "steps_budget": run.counts()["candidates"] * run.settings["steps"],
            "front_size": front["size"], "hypervolume": front["hypervolume"],
            "inherited_hypervolume": front_summary(done, objectives, reference)["hypervolume"],
            "front": [{"trial": t, "arch_key": by_trial[t].key, "accuracy": by_trial[t].metrics["accuracy"],
                       "accuracy_inherited": by_trial[t].metrics.get("accuracy_inherited",
                                                                     by_trial[t].metrics["accuracy"]),
                       "weights": "fine-tuned" if "finetuned" in by_trial[t].metrics else "inherited"}
                      for t in front["trials"]]}


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
    latency = status.get("latency")
    if latency is not None:
        p = latency["predictor"]
        by_source = ", ".join(f"{n} by {source}" for source, n in latency["measurements_by_source"].items())
        lines.append(f"  latency on {latency['target']}: {latency['measurements']} archs measured ({by_source}), "
                     f"{latency['flagged']} flagged" + ("" if latency["flagged_largest_gap_pct"] is None else
                                                        f" (their two halves of rounds apart by up to "
                                                        f"{latency['flagged_largest_gap_pct']:.1f}%)")
                     + ("; no latency predictor fitted yet" if p is None else
                        f"; predictor {p['model']}, cross-validated error {p['cv_mape_pct']:.2f}% (MAPE), Kendall "
                        f"tau {p['cv_kendall_tau']:.3f} on {p['measurements']} measurements"))
    f = status.get("finetune")
    if f is not None:
        lines.append(f"  fine-tuned ({f['settings']['scheduler']}, run {f['run_key'][:8]}): {f['candidates']} "
                     f"candidates, {f['finished']} finished, {f['stopped']} stopped early, {f['unfinished']} "
                     f"unfinished; {f['steps_trained']} of {f['steps_budget']} steps; front {f['front_size']}, "
                     f"hypervolume {f['hypervolume']:.4g} (inherited {f['inherited_hypervolume']:.4g})")
        for member in f["front"]:
            lines.append(f"    trial {member['trial']}: accuracy {member['accuracy']:.4f} "
                         f"(inherited {member['accuracy_inherited']:.4f}, {member['weights']} weights)")
    return "\n".join(lines)
