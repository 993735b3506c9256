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

    .venv/bin/python bench/search/flexibert_search.py --tasks mnist1d --dir runs/bench/flexibert-search-mnist1d \
        --out bench/results/flexibert_search_mnist1d.json
    .venv/bin/python bench/search/flexibert_search.py --tasks listops --steps 400 --batch-size 32 --evaluations 32 \
        --dir runs/bench/flexibert-search-listops --out bench/results/flexibert_search_listops.json

Its runs go to `--dir` (runs/bench/flexibert-search), which must not exist yet: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from bench.search.study_comparison import (
    TASKS,
    add_study_arguments,
    add_to_earlier_run,
    compare_studies,
    print_comparison,
    print_cross,
    study_arguments_problem,
)
from search_space import Arch, SearchSpace
from supernet.tasks import load_task
from supernet.training.train import evaluate, load_supernet

ROOT = Path(__file__).resolve().parents[2]
NEW_MIXERS = ["fourier", "conv3", "conv7"]
WIDTHS = [64, 96, 128]


def space_of(label: str) -> dict:
    space = yaml.safe_load((ROOT / "configs/spaces/mnist1d.yaml").read_text())
    space["name"] = label
    if label == "flexi":
        space["layer"]["mixer"] = space["layer"]["mixer"] + NEW_MIXERS
        space["layer"]["width"] = WIDTHS
    return space


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(parser, "mnist1d,listops", "flexibert-search")
    parser.add_argument("--cross-from", help="an earlier run's results: add the cross evaluation to it and stop")
    args = parser.parse_args(argv)
    base = Path(args.dir)
    if args.cross_from:
        return add_to_earlier_run("--cross-from", Path(args.cross_from), base, "base_front_in_flexi_supernet",
                                  lambda task, t: in_flexi_supernet(task, base / task, t["runs"]["base"]["front"],
                                                                    args.seed),
                                  lambda task, crossed: print_cross(task, crossed, "flexi"))
    tasks, problem = study_arguments_problem(args, TASKS)
    if problem:
        print(f"elastiq: error: {problem}", file=sys.stderr)
        return 2
    return compare_studies(args, tasks, "flexi", lambda task, label: space_of(label), extra=lambda task, runs: {
        "base_front_in_flexi_supernet": in_flexi_supernet(task, base / task, runs["base"]["front"], args.seed)},
        report=_print_results)


def _print_results(task: str, runs: dict, summary: dict) -> None:
    print_comparison(task, runs, summary, "flexi", lambda p: f"{p['macs_b1'] / 1e6:7.2f} MMAC  widths {p['widths']}  "
                                                             f"{p['mixers']}")


if __name__ == "__main__":
    raise SystemExit(main())
