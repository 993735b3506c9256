"""Two searches of one task compared at the same budget (`bench/search/flexibert_search.py`,
`bench/search/stage_search.py`): each study trained, measured and searched through the CLI in a folder of its own,
both fronts timed together on ONNX Runtime, hypervolumes and the fastest match within a point summarized, written
after each task."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import timed
from orchestrator.cli import main as elastiq
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.study import evaluations, require_study
from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import ElastiqError, SearchSpace
from supernet.tasks import load_task
from supernet.token_reduction import layer_layouts
from supernet.training.train import load_supernet

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"digits": {"patch": 2}, "mnist1d": {"num_samples": 8000, "patch": 4},
         "listops": {"seq_len": 128, "train_size": 4000, "val_size": 500, "test_size": 500}}

class StageFailed(Exception):
    """An elastiq command that failed: it has said why on stderr; its exit status is kept."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def run_study(folder: Path, task: str, label: str, steps: int, batch_size: int, budget: int, seed: int,
              space: dict) -> dict:
    """Train, measure and search one study of `space` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
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


def compare_studies(args: argparse.Namespace, tasks: list[str], new: str, space_of, extra=None,
                    report=None) -> int:
    """For each task, the studies `base` and `new` (spaces from `space_of(task, label)`), their fronts timed
    together, summarized, `extra(task, runs)` added, printed
    by `report(task, runs, summary)` and written to `--out` after each task."""
    base = Path(args.dir)
    results = {"steps": args.steps, "batch_size": args.batch_size, "evaluations": args.evaluations,
               "target": "onnxruntime cpu, 1 thread", "tasks": {}}
    for task in tasks:
        try:
            runs = {label: run_study(base / task / label, task, label, args.steps, args.batch_size, args.evaluations,
                                     args.seed, space=space_of(task, label))
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


def print_comparison(task: str, runs: dict, summary: dict, new: str, detail) -> None:
    """Each study's front (a point's own figures from `detail(point)`), the hypervolumes, and for each model of
    `base`'s front the fastest of `new`'s within a point, with the old front's models in the new supernet."""
    for label, run in runs.items():
        print(f"{task} {label}: {run['evaluated']} evaluated in {run['seconds']:.0f} s, front of {len(run['front'])}, "
              f"hypervolume b1 {summary[f'hypervolume_{label}_b1']:.4f}, b32 {summary[f'hypervolume_{label}_b32']:.4f}")
        for p in run["front"]:
            print(f"  {100 * p['accuracy']:6.2f}%  b1 {p['ms_b1']:7.3f} ms  b32 {p['ms_b32']:8.3f} ms  {detail(p)}")
    print(f"{task}: hypervolume {new} / base: b1 {summary['hypervolume_ratio_b1']:.3f}, "
          f"b32 {summary['hypervolume_ratio_b32']:.3f}")
    for m in summary["matched_within_1_point"]:
        print(f"  base {100 * m['accuracy']:.2f}% at {m['base_ms_b32']:.3f} ms b32 -> " + (
            f"{new} {100 * m[f'{new}_accuracy']:.2f}% at {m[f'{new}_ms_b32']:.3f} ms ({m['speedup_b32']:.2f}x)"
            if m[f"{new}_ms_b32"] else "none within 1 point"))
    print_cross(task, summary[f"base_front_in_{new}_supernet"], new)


def print_cross(task: str, crossed: list[dict], new: str) -> None:
    for c in crossed:
        print(f"{task}: base front model of depth {c['depth']}: {100 * c['accuracy_base_supernet']:.2f}% in its "
              f"supernet, {100 * c[f'accuracy_{new}_supernet']:.2f}% in {new}'s")


def add_to_earlier_run(flag: str, path: Path, base: Path, key: str, compute, report) -> int:
    """An earlier run's results file (`flag`), each task's `key` set to `compute(task, results)` (its studies
    in `base`) and reported; 0, or 2 after one line on stderr, the file left as it was."""
    try:
        results = json.loads(path.read_text())
        for task, t in results["tasks"].items():
            t[key] = compute(task, t)
            report(task, t[key])
    except (OSError, ValueError, KeyError, TypeError, ElastiqError) as exc:
        print(f"elastiq: error: {flag} {path} with --dir {base}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    path.write_text(json.dumps(results, indent=1) + "\n")
    return 0
