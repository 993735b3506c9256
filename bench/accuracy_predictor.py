"""Accuracy predictor on held-out archs: how well the search's predictor ranks archs it has not seen.

Archs are sampled (seeded) from the digits space and evaluated with inherited weights
on val, as a search evaluates them; the predictor (the per-layer encoding, candidates
chosen by cross-validation, as the evolutionary strategy fits it) is trained on 100
and scored on the rest. Beside it in the same run: the same predictor on the
layer-averaged encoding HAT uses. Bar: Kendall tau >= 0.8.

    .venv/bin/python bench/accuracy_predictor.py --checkpoint CKPT [--archs 300] [--train 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from latency_predictor import layer_averaged  # a sibling script: bench/ is on sys.path

from predictors.models import AccuracyPredictor
from search_space import SearchSpace, encode_many
from supernet.checkpoint import read_record
from supernet.tasks import load_task
from supernet.train import evaluate, load_supernet

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "configs/spaces/digits.yaml"))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--archs", type=int, default=300)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/accuracy_predictor.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    space = SearchSpace.from_yaml(args.space)
    record = read_record(args.checkpoint)
    task = load_task(record["task"], record["seed"], record.get("task_options", {}))  # the split it trained beside
    supernet = load_supernet(args.checkpoint, space, task, expected_sha256=record["sha256"]).eval()
    rng = np.random.default_rng(args.seed)
    archs = list({a.key: a for a in (space.sample(rng) for _ in range(3 * args.archs))}.values())[: args.archs]
    with torch.inference_mode():
        accuracy = np.array([evaluate(supernet, arch, task, "val") for arch in archs])
    train, held_out = np.arange(args.train), np.arange(args.train, len(archs))
    results = {}
    for name, X in (("elastiq_per_layer", encode_many(space, archs)), ("layer_averaged", layer_averaged(space, archs))):
        predictor = AccuracyPredictor(random_state=args.seed).fit(X[train], accuracy[train])
        results[name] = {**predictor.score(X[held_out], accuracy[held_out]).to_dict(), "chosen": predictor.chosen_}
        print(f"{name:18s} Kendall tau {results[name]['kendall_tau']:.3f}  Spearman {results[name]['spearman']:.3f}  "
              f"RMSE {results[name]['rmse'] * 100:.2f} points ({predictor.chosen_})", flush=True)
    summary = {"archs": len(archs), "train": args.train, "held_out": len(held_out),
               "val_images": len(task.split("val")[1]),
               "accuracy_range": [float(accuracy.min()), float(accuracy.max())],
               "accuracy_std_points": float(accuracy.std() * 100), "results": results,
               "seconds": time.perf_counter() - started}
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
