"""Accuracy predictor on held-out archs: how well the search's predictor ranks archs it has not seen.

Archs are sampled (seeded) from the study's space and evaluated with inherited
weights on val, as a search evaluates them, and on test. The predictor (the
per-layer encoding, candidates chosen by cross-validation) is trained on 100 and
scored on the rest. Beside it in the same run: the predictor as the evolutionary
strategy fits it (ridge or 100 boosted trees, 4 folds), and the default predictor
on the layer-averaged encoding HAT uses. Bar: Kendall tau >= 0.8 against val.

Val accuracy is itself a noisy measurement of an arch, so the run also prints
the Kendall tau between the val and the test accuracy of the same held-out archs
(how much of the val ranking holds on other images), and each predictor's tau
against test. Where val and test disagree, a predictor's tau against val says
how well it learned the val split, more than how well it ranks archs.

    .venv/bin/python bench/search/accuracy_predictor.py --config configs/mnist1d.yaml [--checkpoint CKPT] \
        [--archs 300] [--train 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from bench.common import print_and_write
from bench.latency.hat_baseline import layer_averaged
from orchestrator.config import load_study_config
from orchestrator.search.strategies.evolutionary import search_accuracy_predictor
from predictors.models import AccuracyPredictor
from search_space import encode_many
from supernet.checkpoint import read_record
from supernet.tasks import load_task
from supernet.training.train import evaluate, load_supernet

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/mnist1d.yaml"))
    parser.add_argument("--checkpoint", help="default: the config's supernet.checkpoint")
    parser.add_argument("--archs", type=int, default=300)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="default: bench/results/accuracy_predictor_TASK.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = load_study_config(args.config)
    space = config.space
    checkpoint = args.checkpoint or config.supernet.checkpoint
    record = read_record(checkpoint)
    task = load_task(record["task"], record["seed"], record.get("task_options", {}))  # the split it trained beside
    supernet = load_supernet(checkpoint, space, task, expected_sha256=record["sha256"]).eval()
    rng = np.random.default_rng(args.seed)
    archs = list({a.key: a for a in (space.sample(rng) for _ in range(3 * args.archs))}.values())[: args.archs]
    with torch.inference_mode():
        val = np.array([evaluate(supernet, arch, task, "val") for arch in archs])
        test = np.array([evaluate(supernet, arch, task, "test") for arch in archs])
    train, held_out = np.arange(args.train), np.arange(args.train, len(archs))
    per_layer, averaged = encode_many(space, archs), layer_averaged(space, archs)
    predictors = {
        "elastiq_per_layer": (AccuracyPredictor(random_state=args.seed), per_layer),
        "elastiq_as_searched": (search_accuracy_predictor(args.train, random_state=args.seed), per_layer),
        "layer_averaged": (AccuracyPredictor(random_state=args.seed), averaged),
    }
    val_vs_test = float(kendalltau(val[held_out], test[held_out]).statistic)
    print(f"{'val vs test':20s} Kendall tau {val_vs_test:.3f}", flush=True)
    results = {}
    for name, (predictor, X) in predictors.items():
        predictor.fit(X[train], val[train])
        predicted = predictor.predict(X[held_out])
        results[name] = {**predictor.score(X[held_out], val[held_out]).to_dict(), "chosen": predictor.chosen_,
                         "kendall_tau_test": float(kendalltau(predicted, test[held_out]).statistic)}
        row = results[name]
        print(f"{name:20s} Kendall tau {row['kendall_tau']:.3f} (test {row['kendall_tau_test']:.3f})  Spearman "
              f"{row['spearman']:.3f}  RMSE {row['rmse'] * 100:.2f} points ({predictor.chosen_})", flush=True)
    summary = {"task": record["task"], "task_options": record.get("task_options", {}), "space": space.name,
               "supernet_steps": record.get("steps"), "archs": len(archs), "train": args.train,
               "held_out": len(held_out), "val_images": len(task.split("val")[1]),
               "test_images": len(task.split("test")[1]),
               "accuracy_range": [float(val.min()), float(val.max())], "accuracy_std_points": float(val.std() * 100),
               "val_vs_test_kendall_tau": val_vs_test, "results": results, "seconds": time.perf_counter() - started}
    print_and_write(args.out or ROOT / f"bench/results/accuracy_predictor_{record['task']}.json", summary)


if __name__ == "__main__":
    main()
