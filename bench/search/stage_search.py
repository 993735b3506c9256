"""ViT-ResNAS's stages against one stage: the same search budget, with and without token reduction.

For each task (digits as a 4x4 grid of 2x2-pixel patches; MNIST-1D as 10 tokens; listops, 128 tokens),
two studies, each with its own supernet trained the same way:

- `base`: the task's space (`configs/spaces/digits.yaml`; `mnist1d.yaml` for MNIST-1D and listops);
- `staged`: the same, with stage boundaries the search may put before some layers (`STAGES`): the tokens
  merged 2 by 2 (a sequence) or 2x2 (the digits' grid), and for listops also 4 by 4.

Each is searched with the same budget (evolutionary, accuracy on the validation split against
latency_ms on a batch-32 one-thread ONNX Runtime target). Then every model of both fronts is built as
its ONNX Runtime artifact and timed again here at batch 1 and 32 (one thread, seeded interleaved rounds,
both studies' models mixed): hypervolumes, MACs, and for each model of `base`'s front the fastest of
`staged`'s at most 1 point less accurate (`flexibert_search.summarize`). Also written: the accuracy each
model of `base`'s front inherits from `staged`'s supernet (the same network, no boundary), which tells
the cost of sharing weights across stage layouts; each model of `base`'s front of two layers or more (and the largest
network) in `staged`'s supernet with no boundary, the first and every boundary (accuracy, MACs, b32 latency timed side
by side: what a boundary buys on the same network, whatever the search found); and for each `staged` front
model the largest difference of its logits between the supernet, the extracted model and the artifact on
256 validation inputs. `--boundaries-from RESULTS.json` computes the boundaries' figures alone for an
earlier run (its studies in `--dir`) and adds them to the file.

    .venv/bin/python bench/search/stage_search.py --tasks digits,mnist1d --out bench/results/stage_search.json
    .venv/bin/python bench/search/stage_search.py --tasks listops --steps 400 --batch-size 32 --evaluations 32 \
        --dir runs/bench/stage-search-listops --out bench/results/stage_search_listops.json

Its runs go to `--dir` (runs/bench/stage-search), which must not exist yet: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import timed
from bench.search.study_comparison import (
    TASKS,
    add_study_arguments,
    add_to_earlier_run,
    compare_studies,
    print_comparison,
    study_arguments_problem,
)
from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import Arch, SearchSpace
from supernet.tasks import load_task
from supernet.training.train import evaluate, load_supernet

ROOT = Path(__file__).resolve().parents[2]
SPACES = {"digits": "digits.yaml", "mnist1d": "mnist1d.yaml", "listops": "mnist1d.yaml"}
STAGES = {"digits": [{"layers": [1, 2], "reduce": [1, 2]}],  # 4x4 -> 2x2 -> 1x1 patches
          "mnist1d": [{"layers": [1, 2, 3], "reduce": [1, 2]}],  # 10 -> 5 -> 3 -> 2 tokens
          "listops": [{"layers": [1, 2, 3], "reduce": [1, 2, 4]}]}


def space_of(task: str, label: str) -> dict:
    space = yaml.safe_load((ROOT / "configs/spaces" / SPACES[task]).read_text())
    space["name"] = f"{task}-{label}"
    if label == "staged":
        space["per_layer"] = STAGES[task]
    return space


@functools.lru_cache(maxsize=2)  # one load per task, for the three measures below
def _staged(task_name: str, folder: Path, seed: int):
    """The task, and `staged`'s space and trained supernet in `folder`."""
    task = load_task(task_name, seed, TASKS[task_name])
    space = SearchSpace.from_yaml(folder / "staged" / "space.yaml")
    return task, space, load_supernet(folder / "staged" / "supernet.pt", space, task).eval()


def _arch(point: dict) -> Arch:
    return point["arch"] if isinstance(point["arch"], Arch) else Arch.from_dict(point["arch"])


def _merging_at(space: SearchSpace, arch: Arch, boundaries: list[int]) -> Arch:
    """`arch` in the staged space: its largest factor at `boundaries`, no boundary elsewhere."""
    return space.validate(Arch(arch.embed_dim, tuple(
        replace(layer, reduce=None if space.layers[i].reduce is None
                else max(space.layers[i].reduce) if i in boundaries else 1)
        for i, layer in enumerate(arch.layers))))


def in_staged_supernet(task_name: str, folder: Path, front: list[dict], seed: int) -> list[dict]:
    """The accuracy each of `base`'s front models inherits from `staged`'s supernet (val), without a boundary."""
    task, space, model = _staged(task_name, folder, seed)
    crossed = []
    for point in front:
        with torch.no_grad():
            crossed.append({"depth": _arch(point).depth, "accuracy_base_supernet": point["accuracy"],
                            "accuracy_staged_supernet": evaluate(model, _merging_at(space, _arch(point), []), task)})
    return crossed


def with_boundaries(task_name: str, folder: Path, front: list[dict], rounds: int, seed: int) -> list[dict]:
    """Each of `base`'s front models of two layers or more, and the largest network, in `staged`'s supernet
    without a boundary, with the first boundary the space offers (its largest factor) and with every boundary
    at its largest factor: val accuracy, MACs and b32 latency, the variants timed side by side: what a
    boundary costs and saves on the same network, whatever the search found."""
    task, space, model = _staged(task_name, folder, seed)
    boundaries = [i for i, c in enumerate(space.layers) if c.reduce is not None]
    runtime, x, rows, programs = runtime_named("onnxruntime"), task.split("val")[0], [], {}
    for point in [*front, {"arch": space.largest(), "accuracy": None}]:  # and the largest, whatever the front
        arch = _arch(point)
        if arch.depth < 2:
            continue
        row = {"depth": arch.depth, "accuracy_base_supernet": point["accuracy"], "largest": point["accuracy"] is None}
        for name, merging in (("one_stage", []), ("first_boundary", boundaries[:1]), ("every_boundary", boundaries)):
            variant = _merging_at(space, arch, merging)
            with torch.no_grad():
                row[f"{name}_accuracy"] = evaluate(model, variant, task)
                programs[(len(rows), name)] = runtime.deploy(model.extract(variant).eval(), x[:8])
            row[f"{name}_macs_b1"] = arch_costs(space, task.spec, variant).macs
        rows.append(row)
    for (i, name), ms in timed(programs, x[:32], rounds, np.random.default_rng(seed), calls=3).items():
        rows[i][f"{name}_ms_b32"] = ms
    return rows


def exactness(task_name: str, folder: Path, front: list[dict], seed: int) -> list[dict]:
    """For each of `staged`'s front models: max |supernet - extracted| and max |supernet - ONNX Runtime| of its
    logits."""
    task, _, model = _staged(task_name, folder, seed)
    x, runtime, found = task.split("val")[0][:256], runtime_named("onnxruntime"), []
    for point in front:
        arch = _arch(point)
        with torch.no_grad():
            expected, static = model(x, arch), model.extract(arch).eval()
            program = runtime.deploy(static, x[:8])
            found.append({"bits": [layer.bits for layer in arch.layers],
                          "extracted": float((static(x) - expected).abs().max()),
                          "onnxruntime": float((program(x) - expected).abs().max())})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, "digits,mnist1d", "stage-search")
    parser.add_argument("--boundaries-from", help="an earlier run's results: add the base front's models with "
                                                      "boundaries (`with_boundaries`) to it and stop")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    if args.boundaries_from:
        return add_to_earlier_run("--boundaries-from", Path(args.boundaries_from), base, "base_front_with_boundaries",
                                  lambda task, t: with_boundaries(task, base / task, t["runs"]["base"]["front"],
                                                                  args.rounds, args.seed), _print_boundaries)
    tasks, problem = study_arguments_problem(args, STAGES)
    if problem:
        print(f"elastiq: error: {problem}", file=sys.stderr)
        return 2
    return compare_studies(args, tasks, "staged", space_of=space_of, extra=lambda task, runs: {
        "base_front_in_staged_supernet": in_staged_supernet(task, base / task, runs["base"]["front"], args.seed),
        "staged_exactness": exactness(task, base / task, runs["staged"]["front"], args.seed),
        "base_front_with_boundaries": with_boundaries(task, base / task, runs["base"]["front"], args.rounds,
                                                      args.seed)},
        report=_print)


def _print(task: str, runs: dict, summary: dict) -> None:
    print_comparison(task, runs, summary, "staged", lambda p: f"{p['macs_b1'] / 1e6:7.3f} MMAC  tokens "
                                                              f"{p['tokens_per_layer']}  {p['mixers']}")



def _print_boundaries(task: str, rows: list[dict]) -> None:
    for r in rows:
        which = "the largest network" if r.get("largest") else f"base front model of depth {r['depth']}"
        print(f"{task}: {which} in staged's supernet: " + ", ".join(
            f"{name.replace('_', ' ')} {100 * r[f'{name}_accuracy']:.2f}% {r[f'{name}_ms_b32']:.3f} ms b32 "
            f"{r[f'{name}_macs_b1'] / 1e6:.3f} MMAC" for name in ("one_stage", "first_boundary", "every_boundary")))


if __name__ == "__main__":
    raise SystemExit(main())
