"""Latency measured inside a Ray search against the same archs measured alone, in one run.

1. A hardware-aware search on Ray (2 workers on this machine, `measure_latency`)
   measures every arch it evaluates, as the product does: between batches, with
   the workers waiting on the board, beside drift probes from the target's
   dataset, stored on the dataset's scale (or refused).
2. Right after, with Ray stopped, the same archs are measured alone, twice, the
   same way (beside the same probes), in this process.

Figures: the median |difference| between the search's measurements and the
first alone measurement, against the noise floor: the median |difference|
between the two alone measurements. Also the raw medians (before the probes'
correction) and the latency predictor's CV MAPE on the dataset alone and after
the search added its measurements (bar: within 1.5x).

With `--busy N`, N processes spin on the CPU for the whole search (work sharing
the cores, on purpose): the raw measurements then show what a search would have
stored without the probes, and the stored ones whether the probes corrected or
refused them.

The study database is copied first: the given one is not changed.

    .venv/bin/python bench/latency/search_latency.py --checkpoint CKPT --storage sqlite:///runs/demo/elastiq.db
        [--config configs/digits.yaml] [--evaluations 48] [--seed 0] [--busy N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.common import add_study_options, print_and_write
from orchestrator.config import load_study_config
from orchestrator.search.driver import SearchDriver
from orchestrator.storage.latency import StoredLatency, drift_probes, stored_latencies
from orchestrator.storage.schema import connect
from orchestrator.storage.study import sqlite_file
from predictors.features import latency_features
from predictors.measure import example_input, measure_beside_probes
from predictors.models import LatencyPredictor
from supernet.tasks import load_task
from supernet.training.train import load_supernet

ROOT = Path(__file__).resolve().parents[2]




@contextmanager
def _busy(processes: int):
    """`processes` Python processes spinning on the CPU, stopped (by pid) on exit."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for process in spinning:
            process.kill()
            process.wait()


def _median_pct(relative: np.ndarray) -> float | None:
    return float(np.median(relative) * 100) if relative.size else None  # None: every measurement was refused


def _median_abs_pct(a: np.ndarray, b: np.ndarray) -> float | None:
    return _median_pct(np.abs(a / b - 1)) if a.size else None


def measured_alone(config, task, checkpoint: str, archs: list, probes: list, seed: int) -> list[tuple]:
    """The searched archs measured again right after the search, alone beside the drift probes, twice (the
    second tells the noise floor): each time (scaled medians, raw medians, the probes' check)."""
    target = config.target.to_target()
    supernet = load_supernet(checkpoint, config.space, task)
    inputs = example_input(task.spec, target)
    alone = []
    for repeat in range(2):  # the programs are built anew each time, as each measurement does
        programs = [target.deploy(supernet.extract(a), inputs) for a in archs]
        probe_programs = [target.deploy(supernet.extract(a), inputs) for a, _ in probes]
        measured, check = measure_beside_probes(programs, probe_programs, [m for _, m in probes], inputs, target,
                                                config.measure.to_protocol(), np.random.default_rng([seed, repeat]))
        alone.append((np.array([m.latency_ms for m in measured]), np.array([m.raw_latency_ms for m in measured]),
                      check))
    return alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_options(parser, "a SQLite database holding the target's latency dataset")
    parser.add_argument("--evaluations", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="the search's seed")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning on the CPU during the search")
    parser.add_argument("--out", default=None, help="default: bench/results/search_latency[_busyN].json")
    args = parser.parse_args()
    suffix = f"_busy{args.busy}" if args.busy else ""
    args.out = args.out or str(ROOT / f"bench/results/search_latency{suffix}.json")
    source = Path(sqlite_file(args.storage))
    with tempfile.TemporaryDirectory(prefix="elastiq-bench-") as scratch:
        copy = Path(scratch) / "study.db"
        shutil.copy(source, copy)
        url = f"sqlite:///{copy}"
        study = f"bench-search-latency-{args.seed}"
        config = load_study_config(args.config, {
            "storage": url, "supernet.checkpoint": args.checkpoint, "study": study,
            "search.evaluations": args.evaluations, "search.measure_latency": True, "search.executor": "ray",
            "search.seed": args.seed, "ray.workers": 2, "ray.address": None})
        target = config.target.to_target()
        with _busy(args.busy):
            print(SearchDriver(config, progress=False).run())  # Ray starts and stops inside

        engine = connect(url)
        records = list(stored_latencies(engine, target).values())
        dataset = [r for r in records if r.source in (None, "measure") and not r.measurement.flagged]
        searched = [r for r in records if r.source == "search"]
        probes = drift_probes(engine, target)
        import optuna

        trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
        refused = sum("latency_refused" in t.user_attrs for t in trials)
        drifts = sorted({t.user_attrs["latency_drift"] for t in trials if "latency_drift" in t.user_attrs})
        refusals = sorted({t.user_attrs["latency_refused"] for t in trials if "latency_refused" in t.user_attrs})

        task = load_task(config.task.name, config.seed, config.task.options)
        alone = measured_alone(config, task, args.checkpoint, [r.arch for r in searched], probes, args.seed)

        search_scaled = np.array([r.measurement.latency_ms for r in searched])
        search_raw = np.array([r.measurement.raw_latency_ms for r in searched])
        (alone1, alone1_raw, check1), (alone2, _, check2) = alone

        def cv_mape(subset: list[StoredLatency]) -> float:
            X = latency_features(config.space, task.spec, target, [r.arch for r in subset])
            model = LatencyPredictor(random_state=config.seed).fit(X, np.array([r.measurement.latency_ms
                                                                                for r in subset]))
            return model.cv_scores_[model.chosen_]["mape"]

        engine.dispose()
        dataset_mape = cv_mape(dataset)
        with_search_mape = cv_mape(dataset + [r for r in searched if not r.measurement.flagged])
    result = {
        "target": target.name, "evaluations": args.evaluations, "seed": args.seed, "workers": 2, "busy": args.busy,
        "measured_in_search": len(searched), "refused_in_search": refused, "search_drifts": drifts,
        "search_refusals": refusals,
        "search_vs_alone_median_abs_pct": _median_abs_pct(search_scaled, alone1),
        "search_vs_alone_median_signed_pct": _median_pct(search_scaled / alone1 - 1),
        "noise_floor_median_abs_pct": _median_abs_pct(alone2, alone1),
        "raw_search_vs_alone_median_abs_pct": _median_abs_pct(search_raw, alone1_raw),
        "raw_search_vs_alone_median_signed_pct": _median_pct(search_raw / alone1_raw - 1),
        "alone_checks": [check1.to_dict(), check2.to_dict()],
        "dataset_size": len(dataset), "dataset_cv_mape_pct": dataset_mape,
        "with_search_cv_mape_pct": with_search_mape, "cv_mape_ratio": with_search_mape / dataset_mape,
    }
    print_and_write(args.out, result)


if __name__ == "__main__":
    main()
