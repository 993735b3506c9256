"""The measurement protocol on this machine, per target: which figure of an arch's timed calls repeats, and
how well a latency predictor learns it, in one run.

For each study config, its target's dataset archs (`elastiq measure`'s: stratified, from the study seed) are
built once by the target's runtime and measured twice by the protocol (`predictors.measure.measure_many`),
as two `elastiq measure` runs would. From the same calls, two figures per arch: the fastest call (the
protocol's latency) and the median of the burst medians (the protocol's figure before). Per figure: how far
the two measurements of an arch lie apart (median and 90th percentile of max / min - 1), Kendall tau between
them, and the cross-validated error of the latency predictor fitted on each measurement (on every arch, and,
for the fastest call, on the unflagged ones: as `elastiq measure` reports it), and the archs the protocol
flags. Also each measurement's wall time, and the spread of
the calls themselves.

    .venv/bin/python bench/latency/latency_protocol.py [--configs configs/digits.yaml ...] [--archs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from bench.common import RESULTS, ROOT, print_and_write, refused
from orchestrator.config import load_study_config
from predictors.dataset import stratified_archs
from predictors.features import latency_features
from predictors.measure import example_input, measure_many
from predictors.models import LatencyPredictor
from search_space import InputError
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import load_supernet

CONFIGS = ["configs/digits.yaml", "configs/digits-b32.yaml", "configs/examples/minilm-manpages.yaml"]
FIGURES = {"fastest_call": lambda m: m.latency_ms, "median_of_burst_medians": lambda m: m.burst_median_ms}


def apart(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """How far two measurements of the same archs lie apart: max / min - 1 per arch, and their order."""
    ratios = np.maximum(first, second) / np.minimum(first, second) - 1
    return {"apart_median_pct": float(100 * np.median(ratios)), "apart_p90_pct": float(100 * np.percentile(ratios, 90)),
            "kendall_tau": float(kendalltau(first, second)[0])}


def cv_error(features: np.ndarray, latency: np.ndarray, seed: int) -> dict[str, float | str]:
    model = LatencyPredictor(random_state=seed).fit(features, latency)
    scores = model.cv_scores_[model.chosen_]
    return {"model": model.chosen_, "cv_mape_pct": scores["mape"], "cv_kendall_tau": scores["kendall_tau"]}


def target_figures(config_path: Path, archs: int | None) -> dict:
    config = load_study_config(config_path)
    target = config.target.to_target()
    task = load_task(config.task.name, config.seed, config.task.options)
    checkpoint = Path(config.supernet.checkpoint)
    supernet = load_supernet(checkpoint, config.space, task) if checkpoint.exists() else \
        Supernet(config.space, task.spec, seed=config.seed).eval()  # latency does not depend on the weights
    wanted = stratified_archs(config.space, archs or config.measure.archs, np.random.default_rng(config.seed))
    inputs = example_input(task.spec, target)
    began = time.perf_counter()
    programs = [target.deploy(supernet.extract(arch), inputs) for arch in wanted]
    build_s = time.perf_counter() - began
    protocol = config.measure.to_protocol()
    measurements, seconds = [], []
    for repeat in range(2):
        began = time.perf_counter()
        rng = np.random.default_rng([config.seed, repeat])
        measurements.append(measure_many(programs, inputs, target, protocol, rng))
        seconds.append(time.perf_counter() - began)
    features = latency_features(config.space, task.spec, target, wanted)
    result = {"config": str(config_path), "target": target.name, "batch_size": target.batch_size, "archs": len(wanted),
              "build_s": build_s, "measure_s": seconds,
              "calls_spread_pct": float(100 * np.median([m.cv for m in measurements[0]])),
              "gap_median_pct": float(100 * np.median([m.gap for m in measurements[0]])),
              "flagged": [sum(m.flagged for m in run) for run in measurements]}
    for name, figure in FIGURES.items():
        first, second = (np.array([figure(m) for m in run]) for run in measurements)
        result[name] = {**apart(first, second), "latency_range_ms": [float(first.min()), float(first.max())],
                        "predictor": [cv_error(features, values, config.seed) for values in (first, second)]}
    steady = [np.array([not m.flagged for m in run]) for run in measurements]  # what `elastiq measure` fits on
    result["fastest_call"]["predictor_unflagged"] = [
        cv_error(features[keep], np.array([m.latency_ms for m in run])[keep], config.seed)
        for run, keep in zip(measurements, steady, strict=True)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--archs", type=int, default=None, help="archs per target (default: the config's)")
    parser.add_argument("--out", default=str(RESULTS / "latency_protocol.json"))
    args = parser.parse_args(argv)
    if args.archs is not None and args.archs < 10:
        return refused(f"--archs {args.archs}: a predictor is cross-validated on 10 or more")
    try:
        results = [target_figures(ROOT / path, args.archs) for path in args.configs]
    except InputError as exc:  # a bad config or missing data: one line, nothing written
        return refused(str(exc))
    print_and_write(args.out, {"targets": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
