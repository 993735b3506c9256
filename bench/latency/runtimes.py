"""Runtimes side by side: the artifact of each runtime, for archs across the space, at batch 1 and 32.

For the smallest, the largest and `--random` random archs of the digits space
(weights of the demo's supernet where it exists; latency does not depend on
their values), each registered runtime builds its artifact (real int8 where
the arch's policy says 8 bits), and every artifact is measured side by side in
one run (the same protocol as a latency dataset: rounds, random order, medians)
on a target of 1 thread, at each batch. Reported: each runtime's latency over
ONNX Runtime's (the default), per arch and as medians, and build times.

    .venv/bin/python bench/latency/runtimes.py [--random 8] [--batches 1,32] [--runtimes onnxruntime,aotinductor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from predictors.measure import Protocol, example_input, measure_many
from predictors.target import HardwareTarget
from search_space import SearchSpace
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import load_supernet

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/demo/digits-supernet.pt"))
    parser.add_argument("--random", type=int, default=8)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runtimes", default="onnxruntime,aotinductor")
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/runtimes.json"))
    args = parser.parse_args()

    space = SearchSpace.from_yaml(ROOT / "configs/spaces/digits.yaml")
    task = load_task("digits", 0)
    checkpoint = Path(args.checkpoint)
    supernet = load_supernet(checkpoint, space, task) if checkpoint.exists() else \
        Supernet(space, task.spec, seed=args.seed).eval()
    rng = np.random.default_rng(args.seed)
    archs = {"smallest": space.smallest(), "largest": space.largest()}
    archs.update({f"random-{i}": space.sample(rng) for i in range(args.random)})
    runtimes = args.runtimes.split(",")
    batches = [int(b) for b in args.batches.split(",")]

    example = task.split("test")[0][:1]
    programs, build_seconds = {}, {}
    for runtime in runtimes:
        target = HardwareTarget(f"bench-{runtime}", threads=1, runtime=runtime)
        for name, arch in archs.items():
            started = time.perf_counter()
            programs[(runtime, name)] = target.deploy(supernet.extract(arch), example)  # built, loaded, checked
            build_seconds[(runtime, name)] = time.perf_counter() - started
            print(f"built {runtime:12s} {name:10s} in {build_seconds[(runtime, name)]:6.2f} s", flush=True)

    rows, summary = [], {}
    for batch in batches:
        target = HardwareTarget(f"bench-b{batch}", threads=1, batch_size=batch)
        inputs = example_input(task.spec, target, seed=args.seed)
        keys = list(programs)
        measured = measure_many([programs[k] for k in keys], inputs, target, Protocol(passes=args.passes),
                                np.random.default_rng([args.seed, batch]))
        latency = {k: m.latency_ms for k, m in zip(keys, measured, strict=True)}
        for name, arch in archs.items():
            row = {"arch": name, "arch_key": arch.key, "batch": batch,
                   "int8_layers": sum(layer.bits < 32 for layer in arch.layers), "layers": arch.depth}
            for runtime in runtimes:
                row[f"{runtime}_ms"] = latency[(runtime, name)]
                row[f"{runtime}_over_onnxruntime"] = latency[(runtime, name)] / latency[("onnxruntime", name)]
            rows.append(row)
            print(json.dumps(row), flush=True)
        summary[f"b{batch}"] = {
            f"{runtime}_over_onnxruntime_median": float(np.median(
                [latency[(runtime, n)] / latency[("onnxruntime", n)] for n in archs])) for runtime in runtimes}
        summary[f"b{batch}"]["fastest"] = min(
            runtimes, key=lambda r: np.median([latency[(r, n)] / latency[("onnxruntime", n)] for n in archs]))
    builds = {runtime: {"median_s": float(np.median([build_seconds[(runtime, n)] for n in archs])),
                        "max_s": float(max(build_seconds[(runtime, n)] for n in archs))} for runtime in runtimes}
    result = {"archs": len(archs), "runtimes": runtimes, "summary": summary, "build_seconds": builds, "rows": rows,
              "checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.exists() else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": summary, "build_seconds": builds}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
