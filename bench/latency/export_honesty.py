"""Export honesty: what the exported models of the demo promise against what they do.

1. Size: the ONNX artifact of the largest arch with every layer in int8, over the
   same arch in fp32 (same weights, both built as export builds them).
2. Latency honesty: median |predicted - re-measured| / re-measured over the
   exported fronts (read from their manifests), raw and corrected for the
   machine's drift since its latency dataset was measured.
3. Constraint honesty: share of exported models that meet the latency bound when
   re-measured.

    .venv/bin/python bench/latency/export_honesty.py [--checkpoint runs/demo/digits-supernet.pt]
        [--exports runs/demo/models-b1 runs/demo/models-b32]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from orchestrator.delivery.export import verify_export
from predictors.runtimes import runtime_named
from search_space import Arch, SearchSpace
from supernet.tasks import load_task
from supernet.training.train import load_supernet

ROOT = Path(__file__).resolve().parents[2]


def size_ratio(checkpoint: Path) -> dict:
    space = SearchSpace.from_yaml(ROOT / "configs/spaces/digits.yaml")
    task = load_task("digits", 0)
    supernet = load_supernet(checkpoint, space, task)
    example = task.split("test")[0][:1]
    largest = space.largest()
    int8 = Arch(largest.embed_dim, tuple(replace(layer, bits=8) for layer in largest.layers))
    fp32 = Arch(largest.embed_dim, tuple(replace(layer, bits=32) for layer in largest.layers))
    runtime = runtime_named("onnxruntime")
    int8_bytes = len(runtime.build(supernet.extract(int8), example))
    fp32_bytes = len(runtime.build(supernet.extract(fp32), example))
    return {"arch": "largest", "runtime": runtime.name, "int8_bytes": int8_bytes, "fp32_bytes": fp32_bytes,
            "ratio": int8_bytes / fp32_bytes}


def honesty(exports: list[Path]) -> dict:
    per_export = {}
    errors, corrected, met = [], [], []
    for out in exports:
        manifest = verify_export(out)
        entries = [json.loads((out / m["dir"] / "metrics.json").read_text()) for m in manifest["models"]]
        errors += [abs(e["latency_error_pct"]) for e in entries if e["latency_error_pct"] is not None]
        corrected += [abs(e["latency_error_drift_corrected_pct"]) for e in entries
                      if e.get("latency_error_drift_corrected_pct") is not None]
        met += [e["meets_latency_bound"] for e in entries if e["meets_latency_bound"] is not None]
        study_corrected = [abs(e["latency_error_drift_corrected_pct"]) for e in entries
                           if e.get("latency_error_drift_corrected_pct") is not None]
        per_export[manifest["study"]] = {**manifest["honesty"], "models": len(entries),
                                         "latency_median_abs_error_drift_corrected_pct":
                                             float(np.median(study_corrected)) if study_corrected else None}
    return {"exports": per_export, "models": len(errors),
            "latency_median_abs_error_pct": float(np.median(errors)) if errors else None,
            "latency_median_abs_error_drift_corrected_pct": float(np.median(corrected)) if corrected else None,
            "meets_latency_bound_share": float(np.mean(met)) if met else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/demo/digits-supernet.pt"))
    parser.add_argument("--exports", nargs="+", default=[str(ROOT / "runs/demo/models-b1"),
                                                          str(ROOT / "runs/demo/models-b32")])
    parser.add_argument("--out", default=str(ROOT / "bench/results/export_honesty.json"))
    args = parser.parse_args()
    summary = {"size": size_ratio(Path(args.checkpoint)), **honesty([Path(p) for p in args.exports])}
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
