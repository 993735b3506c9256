"""Search efficiency: evaluations each strategy needs to reach 99% of the reference
hypervolume, on a trained supernet (digits by default), several seeds each, side by side in one run.

The reference is the hypervolume of the pooled front of every run. All runs
share one supernet and one evaluation cache (inherited-weight accuracy on val,
and the latency measured when an arch is first evaluated, as the config's
`measure_latency` asks): an arch two runs propose has the same figures in both,
so the runs differ only in the strategy. Needs a trained supernet checkpoint and the target's latency
dataset in the storage (see `--help`).

    .venv/bin/python bench/search/search_efficiency.py --checkpoint CKPT --storage URL \
        [--seeds 5] [--evaluations 96] \
        [--config configs/mnist1d.yaml --out bench/results/search_efficiency_mnist1d.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from bench.common import add_study_options
from orchestrator.config import load_study_config
from orchestrator.search.driver import SearchDriver
from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.study import REFERENCE_ATTR

ROOT = Path(__file__).resolve().parents[2]
STRATEGIES = ("evolutionary", "nsga2", "tpe", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_options(parser, "a database holding the target's latency dataset")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--out", default=str(ROOT / "bench/results/search_efficiency.json"))
    args = parser.parse_args()

    runs: dict[tuple[str, int], list[tuple[list[float], bool]]] = {}
    seconds: dict[str, list[float]] = {}
    objectives = None
    reference = None
    for strategy in args.strategies.split(","):
        for seed in range(args.seeds):
            name = f"efficiency-{strategy}-{seed}-{args.evaluations}"
            config = load_study_config(args.config, {
                "study": name, "storage": args.storage, "search.seed": seed, "supernet.checkpoint": args.checkpoint,
                "search.strategy": strategy, "search.evaluations": args.evaluations,
                "search.batch_size": args.batch, "search.executor": "local"})
            started = time.perf_counter()
            SearchDriver(config, progress=False).run()
            seconds.setdefault(strategy, []).append(time.perf_counter() - started)
            study = optuna.load_study(study_name=name, storage=args.storage)
            objectives = Objectives.from_config(config.objectives, config.constraints)
            reference = np.asarray(study.user_attrs[REFERENCE_ATTR]) * objectives.signs
            trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
            runs[(strategy, seed)] = [(objectives.values(t.user_attrs["metrics"]), bool(t.user_attrs["feasible"]))
                                      for t in trials]
            print(f"{strategy:12s} seed {seed}: {len(trials)} evaluations in {seconds[strategy][-1]:.0f} s", flush=True)

    pooled = np.array([v for run in runs.values() for v, ok in run if ok]) * objectives.signs
    reference_hv = hypervolume(pooled[pareto_front(pooled)], reference)
    needed: dict[str, list[float]] = {}
    for (strategy, _seed), run in runs.items():
        points, hit = [], float("inf")
        for n, (values, ok) in enumerate(run, start=1):
            if ok:
                points.append(np.asarray(values) * objectives.signs)
            if points and hypervolume(np.array(points), reference) >= 0.99 * reference_hv:
                hit = n
                break
        needed.setdefault(strategy, []).append(hit)
    config_path = Path(args.config).resolve()
    summary = {"config": str(config_path.relative_to(ROOT)) if config_path.is_relative_to(ROOT) else args.config,
               "evaluations_budget": args.evaluations, "seeds": args.seeds, "reference_hypervolume": reference_hv,
               "needed_to_99pct": needed,
               "median_needed": {s: float(np.median(v)) for s, v in needed.items()},
               "reached": {s: int(np.isfinite(v).sum()) for s, v in needed.items()},
               "median_seconds_per_run": {s: float(np.median(v)) for s, v in seconds.items()}}
    median = summary["median_needed"]
    for other in ("nsga2", "random"):
        if "evolutionary" in needed and other in needed:
            summary[f"{other}_over_evolutionary"] = median[other] / median["evolutionary"]
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
