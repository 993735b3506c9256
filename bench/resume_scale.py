"""Resume at scale: from `elastiq resume` to the first new evaluation, on a study of N trials.

Builds (once) a study of N completed trials in SQLite — a small latency dataset
and a real search's first batch, then synthetic completed trials of random archs
added through Optuna's API — then times, on it, a resume with the local executor
until its first new evaluation starts, `status`, and the front with its
hypervolume alone.

    .venv/bin/python bench/resume_scale.py --checkpoint CKPT [--storage URL] [--trials 100000]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna

from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.execution.executors import LocalExecutor
from orchestrator.execution.measuring import run_measure
from orchestrator.search.driver import SearchDriver, front_and_hypervolume
from orchestrator.search.objectives import Objectives
from orchestrator.storage.study import interrupted
from search_space.optuna_map import distributions, params_from_arch

ROOT = Path(__file__).resolve().parent.parent


class FirstEvaluation(Exception):
    pass


class StopAtFirstEvaluation(LocalExecutor):
    def evaluate(self, jobs):
        self.at = time.perf_counter()
        raise FirstEvaluation


def build(config, trials: int) -> None:
    """Synthetic completed trials, inserted in bulk into Optuna's own tables (through its
    SQLAlchemy models): adding 100,000 trials one by one through its API takes far longer."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, func, insert, select

    engine = create_engine(config.storage)
    dists = distributions(config.space)
    dist_json = {name: distribution_to_json(d) for name, d in dists.items()}
    rng = np.random.default_rng(1)
    with engine.begin() as connection:
        study_id = connection.execute(select(models.StudyModel.study_id).where(
            models.StudyModel.study_name == config.study)).scalar_one()
        have = connection.execute(select(func.count()).select_from(models.TrialModel).where(
            models.TrialModel.study_id == study_id)).scalar_one()
        next_id = (connection.execute(select(func.max(models.TrialModel.trial_id))).scalar() or 0) + 1
        now = datetime.now()
        for begin in range(have, trials, 5000):
            rows = {"trials": [], "params": [], "values": [], "attrs": []}
            for number in range(begin, min(begin + 5000, trials)):
                trial_id = next_id + number - have
                arch = config.space.sample(rng)
                accuracy, latency = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.1, 3.0))
                metrics = {"accuracy": accuracy, "latency_ms": latency, "params": 1e5, "bytes": 4e5, "macs": 1e6}
                rows["trials"].append({"trial_id": trial_id, "number": number, "study_id": study_id,
                                       "state": "COMPLETE", "datetime_start": now, "datetime_complete": now})
                for name, value in params_from_arch(config.space, arch).items():
                    rows["params"].append({"trial_id": trial_id, "param_name": name, "distribution_json":
                                           dist_json[name], "param_value": dists[name].to_internal_repr(value)})
                for objective, value in enumerate((accuracy, latency)):
                    rows["values"].append({"trial_id": trial_id, "objective": objective, "value": value,
                                           "value_type": "FINITE"})
                attrs = {"arch": arch.to_json(), "arch_key": arch.key, "metrics": metrics,
                         "feasible": latency <= 1.0, "latency_source": "predicted",
                         "constraint_violations": [latency - 1.0]}
                rows["attrs"] += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                  for k, v in attrs.items()]
            for model, key in ((models.TrialModel, "trials"), (models.TrialParamModel, "params"),
                               (models.TrialValueModel, "values"), (models.TrialUserAttributeModel, "attrs")):
                connection.execute(insert(model), rows[key])
    engine.dispose()


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
    print(json.dumps(summary, indent=2))
    out = Path(args.out or ROOT / f"bench/results/resume_scale_{args.trials}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
