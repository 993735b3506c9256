"""Resume at scale: from `elastiq resume` to the first new evaluation, on a study of N trials.

Builds (once) a study of N completed trials in SQLite — a real search's first
batch, then synthetic completed trials of random archs added through Optuna's
API — then times a resume of it with the local executor until its first new
evaluation starts, and `status` on the same study.

    .venv/bin/python bench/resume_scale.py --checkpoint CKPT --storage URL [--trials 10000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna

from orchestrator.config import load_study_config
from orchestrator.executors import LocalExecutor
from orchestrator.search import SearchDriver
from orchestrator.status import study_status
from search_space.optuna_map import distributions, params_from_arch

ROOT = Path(__file__).resolve().parent.parent


class FirstEvaluation(Exception):
    pass


class StopAtFirstEvaluation(LocalExecutor):
    def evaluate(self, jobs):
        self.at = time.perf_counter()
        raise FirstEvaluation


def build(config, trials: int) -> None:
    study = optuna.load_study(study_name=config.study, storage=config.storage)
    have = len(study.get_trials(deepcopy=False))
    rng = np.random.default_rng(1)
    dists = distributions(config.space)
    batch = []
    for _ in range(trials - have):
        arch = config.space.sample(rng)
        accuracy, latency = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.3, 5.0))
        metrics = {"accuracy": accuracy, "latency_ms": latency, "params": 1e5, "bytes": 4e5, "macs": 1e6}
        batch.append(optuna.trial.create_trial(
            params=params_from_arch(config.space, arch), distributions=dists, values=[accuracy, latency],
            user_attrs={"arch": arch.to_json(), "arch_key": arch.key, "metrics": metrics, "feasible": latency <= 2.0,
                        "latency_source": "predicted", "constraint_violations": [latency - 2.0]}))
        if len(batch) == 500:
            study.add_trials(batch)
            batch = []
    study.add_trials(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--storage", required=True, help="holds the target's latency dataset")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = f"resume-scale-{args.trials}"
    overrides = {"study": name, "storage": args.storage, "supernet.checkpoint": args.checkpoint,
                 "search.executor": "local", "search.evaluations": 8}
    config = load_study_config(args.config, overrides)
    if name not in optuna.get_all_study_names(args.storage):
        SearchDriver(config, progress=False).run()
    started = time.perf_counter()
    build(config, args.trials)
    print(f"study {name}: {args.trials} trials ({time.perf_counter() - started:.0f} s to build)")

    config = load_study_config(args.config, {**overrides, "search.evaluations": args.trials + 8})
    executor = StopAtFirstEvaluation()
    started = time.perf_counter()
    try:
        SearchDriver(config, progress=False, executor=executor).run()
    except FirstEvaluation:
        pass
    resume_s = executor.at - started
    started = time.perf_counter()
    status = study_status(args.storage, name)
    status_s = time.perf_counter() - started
    summary = {"trials": args.trials, "resume_to_first_evaluation_s": resume_s, "status_s": status_s,
               "pareto_size": status["pareto_size"]}
    print(json.dumps(summary, indent=2))
    out = Path(args.out or ROOT / f"bench/results/resume_scale_{args.trials}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
