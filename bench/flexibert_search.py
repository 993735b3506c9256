"""FlexiBERT's wider space against ours: the same search budget, with and without the Fourier and
convolution mixers and a hidden size per layer.

For each task (MNIST-1D as 10 tokens; listops, 128 tokens), two studies, each with its own supernet
trained the same way:

- `base`: the MNIST-1D space (`configs/spaces/mnist1d.yaml`): softmax, linear and local attention,
  one width for every layer;
- `flexi`: the same, plus `fourier`, `conv3` and `conv7` as mixers and widths [64, 96, 128] for
  every layer after the first.

Each is searched with the same budget (evolutionary, accuracy on the validation split against
latency_ms on a batch-32 one-thread ONNX Runtime target). Then every model of both fronts is
extracted from its supernet, built as its ONNX Runtime artifact, and timed again here at batch 1
and 32 (one thread, seeded interleaved rounds, the two studies' models mixed): the hypervolumes
(accuracy x latency saved, reference: no accuracy and the slowest front model's latency) are of
these figures. Printed and written: each front with its mixers, widths, MACs and latencies, the
hypervolumes, for each model of `base`'s front the fastest model of `flexi`'s that is at most 1
point less accurate, and the accuracy each model of `base`'s front inherits from `flexi`'s supernet
(the same network: every layer at the arch's width), which tells the wider supernet's quality from the
search's reach. `--cross-from RESULTS.json` computes that last figure alone for an earlier run (its
studies in `--dir`) and adds it to the file.

    .venv/bin/python bench/flexibert_search.py --tasks mnist1d --dir runs/bench/flexibert-search-mnist1d \
        --out bench/results/flexibert_search_mnist1d.json
    .venv/bin/python bench/flexibert_search.py --tasks listops --steps 400 --batch-size 32 --evaluations 32 \
        --dir runs/bench/flexibert-search-listops --out bench/results/flexibert_search_listops.json

Its runs go to `--dir` (runs/bench/flexibert-search), which must not exist yet: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from quantized_layers import timed  # a sibling script: bench/ is on sys.path

from orchestrator.cli import main as elastiq
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.study import evaluations, require_study
from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import Arch, ElastiqError, SearchSpace
from supernet.tasks import load_task
from supernet.token_reduction import layer_layouts
from supernet.train import evaluate, load_supernet

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"digits": {"patch": 2}, "mnist1d": {"num_samples": 8000, "patch": 4},
         "listops": {"seq_len": 128, "train_size": 4000, "val_size": 500, "test_size": 500}}
NEW_MIXERS = ["fourier", "conv3", "conv7"]
WIDTHS = [64, 96, 128]


class StageFailed(Exception):
    """An elastiq command that failed: it has said why on stderr; its exit status is kept."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def space_of(label: str) -> dict:
    space = yaml.safe_load((ROOT / "configs/spaces/mnist1d.yaml").read_text())
    space["name"] = label
    if label == "flexi":
        space["layer"]["mixer"] = space["layer"]["mixer"] + NEW_MIXERS
        space["layer"]["width"] = WIDTHS
    return space


def run_study(folder: Path, task: str, label: str, steps: int, batch_size: int, budget: int, seed: int,
              space: dict | None = None) -> dict:
    """Train, measure and search one study of `space` (default: `space_of(label)`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space or space_of(label)))
    config = {"study": f"{task}-{label}", "storage": f"sqlite:///{folder / 'elastiq.db'}", "seed": seed,
              "task": {"name": task, "options": TASKS[task]}, "space": "space.yaml",
              "supernet": {"steps": steps, "batch_size": batch_size, "lr": 0.002,
                           "checkpoint": str(folder / "supernet.pt")},
              "target": {"name": "cpu-b32", "device": "cpu", "threads": 1, "batch_size": 32},
              "measure": {"archs": 40},
              "objectives": {"accuracy": "maximize", "latency_ms": "minimize"},
              "search": {"strategy": "evolutionary", "evaluations": budget, "batch_size": 8, "executor": "local"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    for command in ("train-supernet", "measure", "search"):
        code = elastiq([command, "-c", str(folder / "config.yaml"), "--no-progress"])
        if code:
            raise StageFailed(code)
    study = require_study(config["storage"], config["study"])
    found = [e for e in evaluations(study) if "accuracy" in e.metrics and "latency_ms" in e.metrics]
    values = np.array([[-e.metrics["accuracy"], e.metrics["latency_ms"]] for e in found])
    front = [found[i] for i in pareto_front(values)]
    return {"label": label, "folder": str(folder), "evaluated": len(found), "seconds": time.perf_counter() - started,
            "front": [{"accuracy": e.metrics["accuracy"], "search_latency_ms": e.metrics["latency_ms"],
                       "arch": e.arch} for e in front]}


def time_fronts(task_name: str, runs: dict, rounds: int, seed: int) -> None:
    """Each front model's artifact timed at batch 1 and 32, all models of both studies interleaved."""
    task = load_task(task_name, seed, TASKS[task_name])
    runtime, rng = runtime_named("onnxruntime"), np.random.default_rng(seed)
    programs = {}
    for label, run in runs.items():
        space = SearchSpace.from_yaml(Path(run["folder"]) / "space.yaml")
        model = load_supernet(Path(run["folder"]) / "supernet.pt", space, task).eval()
        example = task.split("val")[0][:8]
        for i, point in enumerate(run["front"]):
            arch = point["arch"]
            point["macs_b1"] = arch_costs(space, task.spec, arch).macs
            point["mixers"] = dict(Counter(layer.mixer for layer in arch.layers))
            point["widths"] = list(arch.widths)
            point["tokens_per_layer"] = [layout.tokens for layout in layer_layouts(task.spec, arch)]
            with torch.no_grad():
                programs[(label, i)] = runtime.deploy(model.extract(arch).eval(), example)
    for batch in (1, 32):
        for (label, i), ms in timed(programs, task.split("val")[0][:batch], rounds, rng, calls=3).items():
            runs[label]["front"][i][f"ms_b{batch}"] = ms


def in_flexi_supernet(task_name: str, folder: Path, front: list[dict], seed: int) -> list[dict]:
    """The accuracy each of `base`'s front models inherits from `flexi`'s supernet (val)."""
    task = load_task(task_name, seed, TASKS[task_name])
    space = SearchSpace.from_yaml(folder / "flexi" / "space.yaml")
    model = load_supernet(folder / "flexi" / "supernet.pt", space, task).eval()
    crossed = []
    for point in front:
        arch = point["arch"] if isinstance(point["arch"], Arch) else Arch.from_dict(point["arch"])
        same = Arch(arch.embed_dim, tuple(replace(layer, width=None if i == 0 else arch.embed_dim)
                                          for i, layer in enumerate(arch.layers)))
        with torch.no_grad():
            crossed.append({"depth": arch.depth, "accuracy_base_supernet": point["accuracy"],
                            "accuracy_flexi_supernet": evaluate(model, space.validate(same), task)})
    return crossed


def summarize(runs: dict, new: str = "flexi") -> dict:
    """Hypervolumes at b1 and b32 of each front (as timed here), `new`'s over `base`'s, and for each model
    of `base`'s front the fastest of `new`'s at most 1 point less accurate."""
    summary = {}
    for batch in (1, 32):
        key = f"ms_b{batch}"
        slowest = max(p[key] for run in runs.values() for p in run["front"])
        reference = np.array([0.0, slowest])
        for label, run in runs.items():
            points = np.array([[-p["accuracy"], p[key]] for p in run["front"]])
            kept = points[pareto_front(points)]  # the front again, on the figures timed here
            summary[f"hypervolume_{label}_b{batch}"] = hypervolume(kept, reference) / slowest
        summary[f"hypervolume_ratio_b{batch}"] = (summary[f"hypervolume_{new}_b{batch}"]
                                                  / summary[f"hypervolume_base_b{batch}"])
    matched = []
    for point in sorted(runs["base"]["front"], key=lambda p: p["accuracy"]):
        within = [p for p in runs[new]["front"] if p["accuracy"] >= point["accuracy"] - 0.01]
        best = min(within, key=lambda p: p["ms_b32"]) if within else None
        matched.append({"accuracy": point["accuracy"], "base_ms_b32": point["ms_b32"],
                        f"{new}_accuracy": best["accuracy"] if best else None,
                        f"{new}_ms_b32": best["ms_b32"] if best else None,
                        "speedup_b32": point["ms_b32"] / best["ms_b32"] if best else None})
    summary["matched_within_1_point"] = matched
    return summary


def add_study_arguments(parser: argparse.ArgumentParser, tasks: str, name: str) -> None:
    """The options of a two-study comparison: its tasks, budget, timing rounds, folder and results file."""
    parser.add_argument("--tasks", default=tasks)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--evaluations", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=str(ROOT / "runs/bench" / name))
    parser.add_argument("--out", default=str(ROOT / "bench/results" / f"{name.replace('-', '_')}.json"))


def study_arguments_problem(args: argparse.Namespace, known) -> tuple[list[str], str | None]:
    """The tasks asked for, and what is wrong with the options (None: nothing)."""
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    low = next((f"--{name} {value}: give at least 1" for name, value in (
        ("steps", args.steps), ("batch-size", args.batch_size), ("evaluations", args.evaluations),
        ("rounds", args.rounds)) if value < 1), None)
    problem = (f"--tasks {args.tasks!r}: give some of {', '.join(known)}" if not tasks or set(tasks) - set(known)
               else low or (f"--dir {args.dir}: exists; remove it or give another (its studies would be mixed with "
                            "these)" if Path(args.dir).exists() else None))
    return tasks, problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, "mnist1d,listops", "flexibert-search")
    parser.add_argument("--cross-from", help="an earlier run's results: add the cross evaluation to it and stop")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    if args.cross_from:
        path = Path(args.cross_from)
        try:
            results = json.loads(path.read_text())
            for task, t in results["tasks"].items():
                t["base_front_in_flexi_supernet"] = in_flexi_supernet(task, base / task, t["runs"]["base"]["front"],
                                                                      args.seed)
                _print_cross(task, t["base_front_in_flexi_supernet"])
        except (OSError, ValueError, KeyError, TypeError, ElastiqError) as exc:
            print(f"elastiq: error: --cross-from {path} with --dir {base}: {exc}".splitlines()[0], file=sys.stderr)
            return 2
        path.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    tasks, problem = study_arguments_problem(args, TASKS)
    if problem:
        print(f"elastiq: error: {problem}", file=sys.stderr)
        return 2
    return compare_studies(args, tasks, "flexi", extra=lambda task, runs: {
        "base_front_in_flexi_supernet": in_flexi_supernet(task, base / task, runs["base"]["front"], args.seed)},
        report=_print_results)


def compare_studies(args: argparse.Namespace, tasks: list[str], new: str, space_of=None, extra=None,
                    report=None) -> int:
    """For each task, the studies `base` and `new` (spaces from `space_of(task, label)`, default
    `space_of(label)` above), their fronts timed together, summarized, `extra(task, runs)` added, printed
    by `report(task, runs, summary)` and written to `--out` after each task."""
    base = Path(args.dir)
    results = {"steps": args.steps, "batch_size": args.batch_size, "evaluations": args.evaluations,
               "target": "onnxruntime cpu, 1 thread", "tasks": {}}
    for task in tasks:
        try:
            runs = {label: run_study(base / task / label, task, label, args.steps, args.batch_size, args.evaluations,
                                     args.seed, space=space_of(task, label) if space_of else None)
                    for label in ("base", new)}
        except StageFailed as failed:
            return failed.code
        time_fronts(task, runs, args.rounds, args.seed)
        summary = summarize(runs, new=new)
        summary.update(extra(task, runs) if extra else {})
        for run in runs.values():
            for point in run["front"]:
                point["arch"] = point["arch"].to_dict()
            run["front"].sort(key=lambda p: p["ms_b32"])
        results["tasks"][task] = {"runs": runs, **summary}
        if report:
            report(task, runs, summary)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _print_results(task: str, runs: dict, summary: dict) -> None:
    for label, run in runs.items():
        print(f"{task} {label}: {run['evaluated']} evaluated in {run['seconds']:.0f} s, front of "
              f"{len(run['front'])}, hypervolume b1 {summary[f'hypervolume_{label}_b1']:.4f}, "
              f"b32 {summary[f'hypervolume_{label}_b32']:.4f}")
        for p in run["front"]:
            print(f"  {100 * p['accuracy']:6.2f}%  b1 {p['ms_b1']:7.3f} ms  b32 {p['ms_b32']:8.3f} ms  "
                  f"{p['macs_b1'] / 1e6:7.2f} MMAC  widths {p['widths']}  {p['mixers']}")
    print(f"{task}: hypervolume flexi / base: b1 {summary['hypervolume_ratio_b1']:.3f}, "
          f"b32 {summary['hypervolume_ratio_b32']:.3f}")
    for m in summary["matched_within_1_point"]:
        print(f"  base {100 * m['accuracy']:.2f}% at {m['base_ms_b32']:.3f} ms b32 -> " + (
            f"flexi {100 * m['flexi_accuracy']:.2f}% at {m['flexi_ms_b32']:.3f} ms ({m['speedup_b32']:.2f}x)"
            if m["flexi_ms_b32"] else "none within 1 point"))
    _print_cross(task, summary["base_front_in_flexi_supernet"])


def _print_cross(task: str, crossed: list[dict]) -> None:
    for c in crossed:
        print(f"{task}: base front model of depth {c['depth']}: {100 * c['accuracy_base_supernet']:.2f}% in its "
              f"supernet, {100 * c['accuracy_flexi_supernet']:.2f}% in flexi's")


if __name__ == "__main__":
    raise SystemExit(main())
