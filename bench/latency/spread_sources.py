"""Where a latency measurement's spread comes from: one and the same artifact, measured many ways.

One ONNX Runtime artifact of the digits space (a seeded random arch with int8 layers, and the same arch in
fp32; a fresh supernet's weights: latency does not depend on their values), batch 1 and one thread as
`make demo`'s target, is timed in `--runs` runs of `--samples` samples after `--warmup` calls, under each
variant:

- `default`: the session as a target loads it (idle threads spin: ONNX Runtime's default), one call a sample;
- `no_spinning`: `session.intra_op.allow_spinning` 0;
- `no_arena`: without the CPU memory arena;
- `calls_10`: ten calls in one timed sample (the timer's and Python's share divided by ten);
- `pinned`: the process held to one core while it runs;
- `other_core_busy`: a spinning process on the other core meanwhile;
- `fp32`: the same arch without int8 layers (the u8u8 kernels' share);
- `no_spinning_calls_10_pinned`: the three together.

Each run is one variant's; the runs go in rounds, every variant once a round in a new seeded order, so that
the machine's drift falls on all alike. Per run: the median, the minimum, the 10th percentile and the
10%-trimmed mean of its samples, its spread (IQR / 1.349 / median) and its share of samples more than 25%
above its minimum (a slow state). Per variant: the median of those over runs, and how far each estimator moves
between runs (max / min - 1): the stable estimator is the one that moves least. Also the timer's own cost, and
in one long series of the default session, how long the slow state lasts once entered. Last, which estimator
of an arch's latency repeats: `--archs` random archs timed side by side in `--rounds` rounds of a `--burst`
each, every estimator taken on the first and on the second half of the rounds.

    .venv/bin/python bench/latency/spread_sources.py [--runs 12] [--samples 1500] [--archs 16] [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import kendalltau

from bench.common import RESULTS, ROOT, refuse, write_json
from predictors.measure import example_input
from predictors.runtimes.onnx_runtime import OnnxRuntime
from predictors.target import HardwareTarget
from search_space import SearchSpace
from supernet.model import Supernet
from supernet.tasks import load_task

VARIANTS = {  # name: (artifact, session settings, calls a sample, pinned, other core busy)
    "default": ("int8", {}, 1, False, False),
    "no_spinning": ("int8", {"spinning": False}, 1, False, False),
    "no_arena": ("int8", {"arena": False}, 1, False, False),
    "calls_10": ("int8", {}, 10, False, False),
    "pinned": ("int8", {}, 1, True, False),
    "other_core_busy": ("int8", {}, 1, False, True),
    "fp32": ("fp32", {}, 1, False, False),
    "no_spinning_calls_10_pinned": ("int8", {"spinning": False}, 10, True, False),
}
ESTIMATORS = ("median", "minimum", "p10", "trimmed_mean")
SLOW = 1.25  # a sample this much above its run's minimum is in the slow state


def artifacts(seed: int) -> tuple[dict[str, bytes], torch.Tensor, str, tuple]:
    """The int8 arch's artifact and its fp32 twin, built once; the target's input; the arch's JSON; the space,
    the supernet and an example, for more archs."""
    space = SearchSpace.from_yaml(ROOT / "configs/spaces/digits.yaml")
    task = load_task("digits", seed)
    supernet = Supernet(space, task.spec, seed=seed).eval()
    rng = np.random.default_rng(seed)
    arch = space.sample(rng)
    while not any(layer.bits < 32 for layer in arch.layers) or arch.depth < 3:
        arch = space.sample(rng)
    fp32 = replace(arch, layers=tuple(replace(layer, bits=32) for layer in arch.layers))
    example = task.split("test")[0][:1]
    runtime = OnnxRuntime()
    built = {name: runtime.build(supernet.extract(a), example) for name, a in (("int8", arch), ("fp32", fp32))}
    inputs = example_input(task.spec, HardwareTarget("spread", threads=1, batch_size=1), seed=seed)
    return built, inputs, arch.to_json(), (space, supernet, example)


@contextmanager
def conditions(pinned: bool, busy: bool):
    """The process held to its first allowed core, and a spinning process on another, while the block runs."""
    cores = sorted(os.sched_getaffinity(0))
    spinner = None
    if busy and len(cores) > 1:
        spin = f"import os\nos.sched_setaffinity(0, {{{cores[-1]}}})\nwhile True: pass"
        spinner = subprocess.Popen([sys.executable, "-c", spin])
        time.sleep(0.2)  # started and spinning
    if pinned:
        os.sched_setaffinity(0, {cores[0]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cores))
        if spinner is not None:
            spinner.kill()  # the process this script started, by its handle
            spinner.wait()


def one_run(call, calls: int, samples: int, warmup: int) -> np.ndarray:
    """`samples` times in milliseconds per call, each sample `calls` calls."""
    for _ in range(warmup):
        call()
    times = np.empty(samples)
    for i in range(samples):
        begin = time.perf_counter()
        for _ in range(calls):
            call()
        times[i] = (time.perf_counter() - begin) * 1e3 / calls
    return times


def run_figures(times: np.ndarray) -> dict[str, float]:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    low = float(times.min())
    trimmed = np.sort(times)[len(times) // 10: len(times) - len(times) // 10]
    return {"median": float(median), "minimum": low, "p10": float(np.percentile(times, 10)),
            "trimmed_mean": float(trimmed.mean()), "spread": float((q3 - q1) / 1.349 / median),
            "slow_share": float(np.mean(times > SLOW * low))}


def variant_summary(runs: list[dict[str, float]]) -> dict[str, float]:
    summary = {f"{key}_ms": float(np.median([r[key] for r in runs])) for key in ESTIMATORS}
    summary.update({f"{key}_between_runs": float(max(r[key] for r in runs) / min(r[key] for r in runs) - 1)
                    for key in ESTIMATORS})
    summary["spread_within_run"] = float(np.median([r["spread"] for r in runs]))
    summary["slow_share"] = float(np.median([r["slow_share"] for r in runs]))
    return summary


def timer_cost(samples: int) -> dict[str, float]:
    """What one timed sample costs with nothing in it: two `perf_counter` calls, in microseconds."""
    empty = np.empty(samples)
    for i in range(samples):
        begin = time.perf_counter()
        empty[i] = time.perf_counter() - begin
    return {"median_us": float(np.median(empty) * 1e6), "p99_us": float(np.percentile(empty, 99) * 1e6)}


def slow_stretches(call, samples: int, warmup: int) -> dict[str, float]:
    """One long series of the default session: how long the slow state lasts once entered, in milliseconds
    of wall time (consecutive samples above `SLOW` x the series' minimum), and its share of the series."""
    times = one_run(call, 1, samples, warmup)
    slow = times > SLOW * times.min()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], slow.astype(np.int8), [0]])))
    stretches = [float(times[begin:end].sum()) for begin, end in zip(edges[::2], edges[1::2], strict=True)]
    return {"samples": samples, "slow_share": float(slow.mean()), "stretches": len(stretches),
            "stretch_median_ms": float(np.median(stretches)) if stretches else 0.0,
            "stretch_p90_ms": float(np.percentile(stretches, 90)) if stretches else 0.0,
            "stretch_max_ms": max(stretches, default=0.0), "series_ms": float(times.sum())}


BURST_ESTIMATORS = {  # an arch's latency from its bursts' medians and minima, (rounds, ) each
    "median_of_burst_medians": lambda medians, minima: np.median(medians),  # the protocol's today
    "p25_of_burst_medians": lambda medians, minima: np.percentile(medians, 25),
    "p10_of_burst_medians": lambda medians, minima: np.percentile(medians, 10),
    "min_of_burst_medians": lambda medians, minima: medians.min(),
    "min_of_samples": lambda medians, minima: minima.min(),
}


def estimator_repeatability(space: SearchSpace, supernet: Supernet, example: torch.Tensor, inputs: torch.Tensor,
                            archs: int, rounds: int, burst: int, rng: np.random.Generator) -> dict:
    """`archs` random archs measured side by side as `measure_many` does (rounds of one burst each, in a new
    order each round); each estimator taken on the first and on the second half of the rounds (minutes
    apart, as a dataset and a later re-measurement): how far the halves disagree (median and 90th
    percentile over archs of |first / second - 1|) and how alike they order the archs (Kendall tau)."""
    runtime = OnnxRuntime()
    chosen = [space.sample(rng) for _ in range(archs)]
    calls = [runtime.load(runtime.build(supernet.extract(a), example), "cpu", 1).runner(inputs) for a in chosen]
    medians, minima = np.empty((archs, rounds)), np.empty((archs, rounds))
    for r in range(rounds):
        for i in rng.permutation(archs):
            times = one_run(calls[i], 1, burst, 1)
            medians[i, r], minima[i, r] = np.median(times), times.min()
    half = rounds // 2
    result = {"archs": archs, "rounds": rounds, "burst": burst}
    for name, estimate in BURST_ESTIMATORS.items():
        first = np.array([estimate(medians[i, :half], minima[i, :half]) for i in range(archs)])
        second = np.array([estimate(medians[i, half:], minima[i, half:]) for i in range(archs)])
        gap = np.abs(first / second - 1)
        result[name] = {"halves_apart_median": float(np.median(gap)), "halves_apart_p90": float(np.percentile(gap, 90)),
                        "kendall_tau": float(kendalltau(first, second).statistic)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--archs", type=int, default=16, help="archs of the estimators' repeatability")
    parser.add_argument("--rounds", type=int, default=60, help="rounds in which each of them runs a burst")
    parser.add_argument("--burst", type=int, default=10, help="calls in a burst")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "spread_sources.json"))
    args = parser.parse_args(argv)
    for name in ("runs", "samples", "archs", "rounds", "burst"):
        if getattr(args, name) < 2:
            refuse(f"--{name} {getattr(args, name)}: at least 2")
    if args.warmup < 0:
        refuse(f"--warmup {args.warmup}: not a count")
    torch.set_num_threads(1)
    built, inputs, arch, (space, supernet, example) = artifacts(args.seed)
    runtime, rng = OnnxRuntime(), np.random.default_rng(args.seed)
    calls = {name: runtime.load(built[artifact], "cpu", 1, **settings).runner(inputs)
             for name, (artifact, settings, *_) in VARIANTS.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for round_index in range(args.runs):
        for name in rng.permutation(list(VARIANTS)).tolist():
            _, _, per_sample, pinned, busy = VARIANTS[name]
            with conditions(pinned, busy):
                samples = max(2, args.samples // per_sample)
                runs[name].append(run_figures(one_run(calls[name], per_sample, samples, args.warmup)))
        print(f"round {round_index + 1}/{args.runs}: " + ", ".join(
            f"{n} {runs[n][-1]['median']:.3f}" for n in VARIANTS), flush=True)
    result = {"arch": arch, "runs": args.runs, "samples": args.samples, "warmup": args.warmup,
              "cores": len(os.sched_getaffinity(0)), "timer": timer_cost(10_000),
              "slow_state": slow_stretches(calls["default"], 20 * args.samples, args.warmup),
              "variants": {name: variant_summary(r) for name, r in runs.items()},
              "estimators": estimator_repeatability(space, supernet, example, inputs, args.archs, args.rounds,
                                                    args.burst, np.random.default_rng([args.seed, 1])),
              "per_run": runs}
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
