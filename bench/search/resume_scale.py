"""Resume at scale: from `elastiq resume` to the first new evaluation, on a study of N trials.

Builds (once) a study of N completed trials in SQLite — a small latency dataset
and a real search's first batch, then synthetic completed trials of random archs
added through Optuna's API — then times, on it, a resume with the local executor
until its first new evaluation starts, `status`, and the front with its
hypervolume alone.

    .venv/bin/python bench/search/resume_scale.py --checkpoint CKPT [--storage URL] [--trials 100000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import optuna

from bench.common import print_and_write
from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.execution.executors import LocalExecutor
from orchestrator.execution.measuring import run_measure
from orchestrator.search.driver import SearchDriver
from orchestrator.search.front import front_and_hypervolume
from orchestrator.search.objectives import Objectives
from orchestrator.storage.optuna_private import SyntheticTrial, add_completed_trials
from orchestrator.storage.study import interrupted
from search_space.optuna_map import distributions, params_from_arch

ROOT = Path(__file__).resolve().parents[2]


class FirstEvaluation(Exception):
    pass


class StopAtFirstEvaluation(LocalExecutor):
    def evaluate(self, jobs):
        self.at = time.perf_counter()
        raise FirstEvaluation


def build(config, trials: int) -> None:
    """Synthetic completed trials of random archs, inserted in bulk (adding 100,000 trials one by one through
    Optuna's API takes far longer)."""
    rng = np.random.default_rng(1)

    def synthetic(number: int) -> SyntheticTrial:
        arch = config.space.sample(rng)
        accuracy, latency = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.1, 3.0))
        metrics = {"accuracy": accuracy, "latency_ms": latency, "params": 1e5, "bytes": 4e5, "macs": 1e6}
        attrs = {"arch": arch.to_json(), "arch_key": arch.key, "metrics": metrics, "feasible": latency <= 1.0,
                 "latency_source": "predicted", "constraint_violations": [latency - 1.0]}
        return SyntheticTrial(params_from_arch(config.space, arch), (accuracy, latency), attrs)

    add_completed_trials(config.storage, config.study, distributions(config.space), trials, synthetic)


def time_to_first_evaluation(config) -> float:
    executor = StopAtFirstEvaluation()
    started = time.perf_counter()
    try:
        SearchDriver(config, progress=False, executor=executor).run()
    except FirstEvaluation:
        pass
    return executor.at - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--storage", default="sqlite:///runs/bench/scale.db")
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = f"resume-scale-{args.trials}"
    overrides = {"study": name, "storage": args.storage, "supernet.checkpoint": args.checkpoint,
                 "search.executor": "local", "search.evaluations": 8}
    config = load_study_config(args.config, overrides)
    (ROOT / "runs" / "bench").mkdir(parents=True, exist_ok=True)  # the default storage's directory
    run_measure(config, count=20, progress=False)  # the target's latency dataset, if not there yet
    if name not in optuna.get_all_study_names(args.storage):
        SearchDriver(config, progress=False).run()
    started = time.perf_counter()
    build(config, args.trials)
    print(f"study {name}: {args.trials} trials ({time.perf_counter() - started:.0f} s to build)")

    config = load_study_config(args.config, {**overrides, "search.evaluations": args.trials + 8})
    study = optuna.load_study(study_name=name, storage=args.storage)
    for trial in interrupted(study):  # a clean stop: the next batch comes from the strategy
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    resume_s = time_to_first_evaluation(config)  # from a clean stop: the strategy proposes over every trial
    crash_s = time_to_first_evaluation(config)  # the batch it left RUNNING: recovered and run again first
    started = time.perf_counter()
    study_status(args.storage, name)
    status_s = time.perf_counter() - started
    objectives = Objectives.from_config(config.objectives, config.constraints)
    started = time.perf_counter()
    hypervolume, front_size = front_and_hypervolume(study, objectives)
    front_s = time.perf_counter() - started
    summary = {"trials": args.trials, "resume_to_first_evaluation_s": resume_s,
               "resume_after_crash_to_first_evaluation_s": crash_s, "status_s": status_s,
               "front_and_hypervolume_s": front_s, "pareto_size": front_size, "hypervolume": hypervolume}
    print_and_write(args.out or ROOT / f"bench/results/resume_scale_{args.trials}.json", summary)


if __name__ == "__main__":
    main()
