"""Orchestration overhead: 64 evaluations through Ray Tune vs the local executor.

Same jobs (random digits archs, inherited-weight accuracy on val, one thread
per evaluation). Bars: Ray Tune with 1 worker / local <= 1.2; Ray Tune with 2
workers on 2 cores: speed-up >= 1.6x over local. Ray's start-up is timed
apart: it is paid once per driver, not per evaluation.

This machine's speed drifts by tens of percent within minutes, so local and Ray
runs alternate, round by round, and the figures are medians of per-round ratios.
The local executor runs in a process of its own, as `--executor local` would.

    .venv/bin/python bench/search/orchestration_overhead.py --checkpoint CKPT [--evaluations 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from orchestrator.config import load_study_config
from orchestrator.execution.executors import LocalExecutor, RayExecutor
from orchestrator.search.driver import SearchDriver
from supernet.checkpoint import read_record

ROOT = Path(__file__).resolve().parents[2]


def local_run(jobs) -> tuple[float, list]:
    started = time.perf_counter()
    results = LocalExecutor().evaluate(jobs)
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--evaluations", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench/results/orchestration_overhead.json"))
    args = parser.parse_args()
    config = load_study_config(args.config, {"supernet.checkpoint": args.checkpoint})
    driver = SearchDriver(config, progress=False)
    sha = read_record(args.checkpoint)["sha256"]
    rng = np.random.default_rng(0)
    jobs = [driver._job(config.space.sample(rng), sha) for _ in range(args.evaluations)]

    def timed(executor) -> tuple[float, list]:
        started = time.perf_counter()
        results = executor.evaluate(jobs)
        return time.perf_counter() - started, results

    # the local executor runs in a process of its own: in the driver, it would share the
    # interpreter with Tune's controller thread, which a local run does not have
    local = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    local.submit(local_run, jobs[:2]).result()  # the supernet loaded, as in a long search
    rows: dict[str, object] = {}
    ratios: dict[int, list[float]] = {}
    for workers in (1, 2):
        started = time.perf_counter()
        ray_executor = RayExecutor(None, workers, config.target.name)
        rows[f"ray_start_{workers}"] = time.perf_counter() - started
        try:
            ray_executor.evaluate(jobs[: 2 * workers])  # every worker up and loaded
            for _ in range(args.rounds):  # while one runs, the other is idle
                local_s, local_results = local.submit(local_run, jobs).result()
                ray_s, results = timed(ray_executor)
                rows.setdefault(f"local_beside_{workers}", []).append(local_s)
                rows.setdefault(f"ray_tune_{workers}", []).append(ray_s)
                ratios.setdefault(workers, []).append(ray_s / local_s)
                rows[f"ray_tune_{workers}_same_results"] = all(
                    a["accuracy"] == b["accuracy"] for a, b in zip(local_results, results, strict=True))
        finally:
            ray_executor.close()
    local.shutdown()
    summary = {"evaluations": args.evaluations, "rounds": args.rounds, "seconds": rows,
               "ratio_ray1_over_local": float(np.median(ratios[1])),
               "speedup_ray2_over_local": float(np.median([1 / r for r in ratios[2]]))}
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
