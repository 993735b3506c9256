"""Orchestration overhead: 64 evaluations through Ray Tune vs the local executor.

Same jobs (random digits archs, inherited-weight accuracy on val, one thread
per evaluation). Bars: Ray Tune with 1 worker / local <= 1.2; Ray Tune with 2
workers on 2 cores: speed-up >= 1.6x over local. Ray's start-up is timed
apart: it is paid once per driver, not per evaluation.

    .venv/bin/python bench/orchestration_overhead.py --checkpoint CKPT [--evaluations 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from orchestrator.config import load_study_config
from orchestrator.executors import LocalExecutor, RayExecutor
from orchestrator.measuring import target_of
from orchestrator.search import SearchDriver
from supernet.checkpoint import read_record

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--evaluations", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench/results/orchestration_overhead.json"))
    args = parser.parse_args()
    config = load_study_config(args.config, {"supernet.checkpoint": args.checkpoint})
    driver = SearchDriver(config, progress=False)
    sha = read_record(args.checkpoint)["sha256"]
    rng = np.random.default_rng(0)
    jobs = [driver._job(config.space.sample(rng), sha) for _ in range(args.evaluations)]

    def timed(executor) -> tuple[float, list]:
        executor.evaluate(jobs[:2])  # load the supernet into the worker(s) first, as a long search would
        started = time.perf_counter()
        results = executor.evaluate(jobs)
        return time.perf_counter() - started, results

    local_s, local_results = timed(LocalExecutor())
    rows = {"local": local_s}
    for workers in (1, 2):
        started = time.perf_counter()
        ray_executor = RayExecutor(None, workers, target_of(config).name)
        rows[f"ray_start_{workers}"] = time.perf_counter() - started
        try:
            rows[f"ray_tune_{workers}"], results = timed(ray_executor)
        finally:
            ray_executor.close()
        same = all(a["accuracy"] == b["accuracy"] for a, b in zip(local_results, results, strict=True))
        rows[f"ray_tune_{workers}_same_results"] = same
    summary = {"evaluations": args.evaluations, "seconds": rows,
               "ratio_ray1_over_local": rows["ray_tune_1"] / rows["local"],
               "speedup_ray2_over_local": rows["local"] / rows["ray_tune_2"]}
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
