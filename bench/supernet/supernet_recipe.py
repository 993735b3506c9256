"""Supernet training recipes against training alone, over seeds and budgets.

For each recipe (a variant of the config's `supernet` section), budget and seed,
a supernet is trained and its largest and smallest archs are scored with
inherited weights; the same two archs are trained alone with the same steps,
batch size and seed. The gap (alone minus inherited, validation accuracy, in
points) is reported per recipe and budget as the mean and spread over seeds.
The task's data split stays the config's: a seed changes the initial weights,
the batches and the sampled archs.

    .venv/bin/python bench/supernet/supernet_recipe.py --config configs/mnist1d.yaml --steps 500,1000 --seeds 3 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import load_study_config
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import evaluate, train_standalone, train_supernet

ROOT = Path(__file__).resolve().parents[2]

# changes to the config's supernet section; a float distill_start is a fraction of the budget.
# Recipes other than `configured` name every knob they depend on, so they mean the same whatever the default.
DISTILLED_SUMMED = {"distill": True, "random_weight": 2.0, "sandwich_random": 2}  # the default until the fix
RECIPES = {
    "configured": {},
    "distilled_summed": DISTILLED_SUMMED,
    "labels_summed": {**DISTILLED_SUMMED, "distill": False},
    "distilled_sandwich_only": {**DISTILLED_SUMMED, "sandwich_random": 0},
    "distill_from_half": {**DISTILLED_SUMMED, "distill_start": 0.5},
    "half_distilled": {**DISTILLED_SUMMED, "distill_weight": 0.5},
    "distilled_random_1": {**DISTILLED_SUMMED, "random_weight": 1.0},
    "distilled_random_0.5": {**DISTILLED_SUMMED, "random_weight": 0.5},
    "distilled_sandwich_only_lr4e-3": {**DISTILLED_SUMMED, "sandwich_random": 0, "lr": 4e-3},
    "labels_sandwich_only": {**DISTILLED_SUMMED, "distill": False, "sandwich_random": 0},
    "labels_one_random": {**DISTILLED_SUMMED, "distill": False, "sandwich_random": 1, "random_weight": 1.0},
    "labels_random_1": {**DISTILLED_SUMMED, "distill": False, "random_weight": 1.0},
    "labels_random_0.5": {**DISTILLED_SUMMED, "distill": False, "random_weight": 0.5},
    "labels_summed_lr4e-3": {**DISTILLED_SUMMED, "distill": False, "lr": 4e-3},
}


def _settings(config_path: str, steps: int, changes: dict):
    config = load_study_config(config_path)
    changes = {k: (int(v * steps) if k == "distill_start" and isinstance(v, float) else v) for k, v in changes.items()}
    return config, replace(config.supernet.to_train_settings(), steps=steps, checkpoint_every=10**9, **changes)


def _run(job: dict) -> dict:
    """One training, in a worker process with one thread: a supernet (two archs scored) or one arch alone."""
    torch.set_num_threads(1)
    config, settings = _settings(job["config"], job["steps"], RECIPES.get(job["recipe"], {}))
    task = load_task(config.task.name, config.seed, config.task.options)
    space, seed = config.space, job["seed"]
    archs = {"largest": space.largest(), "smallest": space.smallest()}
    started = time.perf_counter()
    if job["recipe"] == "alone":
        model = Supernet(space, task.spec, seed=seed).extract(archs[job["arch"]])
        train_standalone(model, task, settings, seed=seed)
        scores = {job["arch"]: evaluate(model, None, task, "val")}
    else:
        supernet = Supernet(space, task.spec, seed=seed)
        train_supernet(supernet, task, settings, seed=seed, progress=False)
        scores = {name: evaluate(supernet, arch, task, "val") for name, arch in archs.items()}
    return {**job, "val": scores, "seconds": time.perf_counter() - started}


def summarize(runs: list[dict], recipes: list[str], budgets: list[int]) -> list[dict]:
    alone = {(r["steps"], r["seed"], r["arch"]): r["val"][r["arch"]] for r in runs if r["recipe"] == "alone"}
    table = []
    for recipe in recipes:
        for steps in budgets:
            row = {"recipe": recipe, "steps": steps}
            for arch in ("largest", "smallest"):
                pairs = [(r["val"][arch], alone[(steps, r["seed"], arch)]) for r in runs
                         if r["recipe"] == recipe and r["steps"] == steps and (steps, r["seed"], arch) in alone]
                if not pairs:
                    continue
                inherited, standalone = np.array(pairs).T * 100
                gaps = standalone - inherited
                row[arch] = {"inherited_mean": float(inherited.mean()), "alone_mean": float(standalone.mean()),
                             "gap_mean": float(gaps.mean()), "gap_std": float(gaps.std(ddof=1)) if len(gaps) > 1
                             else 0.0, "seeds": len(gaps)}
            table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/mnist1d.yaml"))
    parser.add_argument("--steps", default="500,1000", help="budgets, comma-separated")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"of {list(RECIPES)}")
    parser.add_argument("--jobs", type=int, default=2, help="trainings in parallel, one thread each")
    parser.add_argument("--out", default=str(ROOT / "bench/results/supernet_recipe.json"))
    parser.add_argument("--alone-from", default=None,
                        help="a previous results file whose archs trained alone (same config) are reused: "
                             "training alone is deterministic for a seed")
    args = parser.parse_args()
    budgets = [int(s) for s in args.steps.split(",")]
    recipes = args.recipes.split(",")
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        parser.error(f"unknown recipes {sorted(unknown)}")

    runs = []
    if args.alone_from:
        previous = json.loads(Path(args.alone_from).read_text())
        runs = [r for r in previous["runs"] if r["recipe"] == "alone" and r["config"] == args.config
                and r["steps"] in budgets and r["seed"] < args.seeds]
    done = {(r["arch"], r["steps"], r["seed"]) for r in runs}
    jobs = [{"recipe": "alone", "arch": arch, "steps": steps, "seed": seed, "config": args.config}
            for steps in budgets for seed in range(args.seeds) for arch in ("largest", "smallest")
            if (arch, steps, seed) not in done]
    jobs += [{"recipe": recipe, "arch": None, "steps": steps, "seed": seed, "config": args.config}
             for steps in budgets for seed in range(args.seeds) for recipe in recipes]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for run in pool.imap_unordered(_run, jobs):
            runs.append(run)
            print(f"{run['recipe']:18s} {run['arch'] or '':8s} steps {run['steps']:5d} seed {run['seed']} "
                  f"val {json.dumps({k: round(v, 4) for k, v in run['val'].items()})} ({run['seconds']:.0f} s)",
                  flush=True)
            # written after every run: a long benchmark stopped midway keeps what it measured
            out.write_text(json.dumps({"config": args.config, "recipes": {r: RECIPES[r] for r in recipes},
                                       "table": summarize(runs, recipes, budgets), "runs": runs}, indent=1))
    for row in summarize(runs, recipes, budgets):
        cells = [f"{arch} gap {row[arch]['gap_mean']:+.1f} ± {row[arch]['gap_std']:.1f} "
                 f"({row[arch]['inherited_mean']:.1f} vs {row[arch]['alone_mean']:.1f})"
                 for arch in ("largest", "smallest") if arch in row]
        print(f"{row['recipe']:18s} {row['steps']:5d} steps: " + "; ".join(cells))


if __name__ == "__main__":
    main()
