"""A search on the demo's digits space with 4-bit layers and a bytes objective, against the same
search without them.

Two studies, each with its own supernet trained the same way (the demo's
recipe) on the digits space, one offering `bits: [32, 8, 4]` and one `[32, 8]`,
each searched with the same budget (evolutionary, accuracy on the validation
split against the artifact's bytes from the cost model). Printed and written:
each front, the share of its layers at each bit width, its hypervolume
(accuracy x bytes saved, reference: no accuracy and the largest fp32 arch's
bytes), and, for each point of the front without 4-bit, the bytes of the
smallest model of the other front that is at least as accurate.

    .venv/bin/python bench/search/quantized_search.py [--steps 600] [--evaluations 64]

Its runs go to `--dir` (runs/bench/quantized-search), which must not exist yet: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from orchestrator.cli import main as elastiq
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.study import evaluations, require_study
from predictors.cost import arch_costs
from search_space import SearchSpace
from supernet.tasks import load_task

ROOT = Path(__file__).resolve().parents[2]


class StageFailed(Exception):
    """An elastiq command that failed: it has said why on stderr; its exit status is kept."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def run_study(folder: Path, bits: list[int], steps: int, evaluations_budget: int, seed: int) -> dict:
    space = yaml.safe_load((ROOT / "configs/spaces/digits.yaml").read_text())
    space["layer"]["bits"] = bits
    space["name"] = f"digits-{'-'.join(map(str, bits))}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    config = {"study": space["name"], "storage": f"sqlite:///{folder / 'elastiq.db'}", "seed": seed,
              "task": {"name": "digits"}, "space": "space.yaml",
              "supernet": {"steps": steps, "batch_size": 128, "lr": 0.002,
                           "checkpoint": str(folder / "supernet.pt")},
              "objectives": {"accuracy": "maximize", "bytes": "minimize"},
              "search": {"strategy": "evolutionary", "evaluations": evaluations_budget, "batch_size": 8,
                         "executor": "local"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    for command in ("train-supernet", "search"):
        code = elastiq([command, "-c", str(folder / "config.yaml")])
        if code:
            raise StageFailed(code)
    study = require_study(config["storage"], config["study"])
    found = [e for e in evaluations(study) if "accuracy" in e.metrics and "bytes" in e.metrics]
    values = np.array([[-e.metrics["accuracy"], e.metrics["bytes"]] for e in found])  # both minimized
    front = [found[i] for i in pareto_front(values)]
    front.sort(key=lambda e: e.metrics["bytes"])
    layers = [layer.bits for e in front for layer in e.arch.layers]
    return {"space": space["name"], "bits": bits, "front": [
        {"accuracy": e.metrics["accuracy"], "bytes": int(e.metrics["bytes"]), "arch": e.arch.to_dict()} for e in front],
        "layer_share": {str(b): layers.count(b) / len(layers) for b in bits}, "evaluated": len(found)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--evaluations", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=str(ROOT / "runs/bench/quantized-search"))
    parser.add_argument("--out", default=str(ROOT / "bench/results/quantized_search.json"))
    args = parser.parse_args(argv)
    base = Path(args.dir)
    problem = (f"--steps {args.steps}: give at least 1" if args.steps < 1
               else f"--evaluations {args.evaluations}: give at least 1" if args.evaluations < 1
               else f"--dir {base}: exists; remove it or give another (its studies would be mixed with these)"
               if base.exists() else None)
    if problem:
        print(f"elastiq: error: {problem}", file=sys.stderr)
        return 2
    try:
        runs = {label: run_study(base / label, bits, args.steps, args.evaluations, args.seed)
                for label, bits in (("with-4-bit", [32, 8, 4]), ("without-4-bit", [32, 8]))}
    except StageFailed as failed:
        return failed.code
    space = SearchSpace.from_yaml(base / "with-4-bit" / "space.yaml")
    largest = arch_costs(space, load_task("digits", args.seed).spec, space.largest()).bytes
    reference = np.array([0.0, float(largest)])
    for run in runs.values():
        points = np.array([[-p["accuracy"], p["bytes"]] for p in run["front"]])
        run["hypervolume"] = hypervolume(points, reference) / largest  # in units of the largest model's bytes
    matched = []
    for point in runs["without-4-bit"]["front"]:
        better = [p["bytes"] for p in runs["with-4-bit"]["front"] if p["accuracy"] >= point["accuracy"]]
        matched.append({"accuracy": point["accuracy"], "bytes_without": point["bytes"],
                        "bytes_with": min(better) if better else None})
    summary = {"runs": runs, "matched": matched, "largest_fp32_bytes": largest,
               "hypervolume_ratio": runs["with-4-bit"]["hypervolume"] / runs["without-4-bit"]["hypervolume"]}
    for label, run in runs.items():
        print(f"{label}: front of {len(run['front'])}, layers by bits {run['layer_share']}, "
              f"hypervolume {run['hypervolume']:.4f}")
        for p in run["front"]:
            print(f"  {100 * p['accuracy']:6.2f}%  {p['bytes']:>9,} bytes  bits "
                  f"{[layer['bits'] for layer in p['arch']['layers']]}")
    for m in matched:
        print(f"at >= {100 * m['accuracy']:.2f}%: {m['bytes_without']:,} bytes without 4-bit, "
              f"{m['bytes_with']:,} with" if m["bytes_with"] else f"at {100 * m['accuracy']:.2f}%: none as accurate")
    print(f"hypervolume with / without 4-bit: {summary['hypervolume_ratio']:.3f}")
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
