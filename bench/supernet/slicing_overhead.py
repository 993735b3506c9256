"""Slicing overhead: an arch run inside the supernet vs its extracted static model.

Same input, 1 thread, the two calls interleaved so that machine noise hits
both alike; medians over many repeats. The issue's bar: largest arch <= 1.10.

    .venv/bin/python bench/supernet/slicing_overhead.py [--repeats 600]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from search_space import SearchSpace
from supernet.model import Supernet
from supernet.tasks import load_task

ROOT = Path(__file__).resolve().parents[2]


def interleaved_medians(a, b, repeats: int) -> tuple[float, float]:
    times_a, times_b = [], []
    with torch.inference_mode():
        for _ in range(50):
            a(), b()
        for _ in range(repeats):
            start = time.perf_counter()
            a()
            middle = time.perf_counter()
            b()
            times_a.append(middle - start)
            times_b.append(time.perf_counter() - middle)
    return float(np.median(times_a)) * 1e3, float(np.median(times_b)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "configs/spaces/digits.yaml"))
    parser.add_argument("--repeats", type=int, default=600)
    parser.add_argument("--out", default=str(ROOT / "bench/results/slicing_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = SearchSpace.from_yaml(args.space)
    task = load_task("digits", 0)
    supernet = Supernet(space, task.spec).eval()
    rng = np.random.default_rng(0)
    archs = {"largest": space.largest(), "smallest": space.smallest(), "random": space.sample(rng)}
    rows = []
    for batch in (1, 32):
        x = task.split("val")[0][:batch]
        for name, arch in archs.items():
            static = supernet.extract(arch).eval()
            static_ms, sliced_ms = interleaved_medians(lambda s=static, x=x: s(x), lambda a=arch, x=x: supernet(x, a),
                                                       args.repeats)
            rows.append({"arch": name, "batch": batch, "static_ms": static_ms, "supernet_ms": sliced_ms,
                         "ratio": sliced_ms / static_ms, "bits": [layer.bits for layer in arch.layers]})
            print(f"{name:9s} batch {batch:3d}: static {static_ms:.3f} ms, in supernet {sliced_ms:.3f} ms, "
                  f"ratio {sliced_ms / static_ms:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": 1, "repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
