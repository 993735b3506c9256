"""Latency predictor accuracy on this CPU, against the anchors' methods, in one run.

  1. noise floor: the spread of repeated protocol measurements of one model;
  2. held-out accuracy of elastiq's predictor (per-op analytic costs, model
     chosen by CV) trained on 300 measurements, beside (a) an OFA-style
     lookup table (each block configuration measured in isolation, summed) and
     (b) a HAT-style MLP on layer-averaged features, trained on the same data;
  3. sample efficiency: MAPE against the number of measurements;
  4. the int8 effect: the largest arch all-int8 over all-fp32, side by side.
Bars: MAPE <= 5% and <= 1.5x the noise floor, Kendall tau >= 0.95.

    .venv/bin/python bench/latency/latency_predictor.py [--archs 500] [--batch 1] [--passes 15] [--chunk 500]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import write_json
from bench.latency.hat_baseline import hat_mlp, layer_averaged
from predictors.dataset import measure_archs, stratified_archs
from predictors.features import latency_features
from predictors.measure import Protocol, example_input, measure_many
from predictors.models import LatencyPredictor, scores
from predictors.target import HardwareTarget
from search_space import Arch, LayerArch, SearchSpace
from supernet.model import Subnet, Supernet
from supernet.tasks import load_task

ROOT = Path(__file__).resolve().parents[2]


def lookup_table(supernet: Supernet, space: SearchSpace, target: HardwareTarget, protocol: Protocol,
                 seed: int) -> dict:
    """OFA-style: every block configuration and every stem+head, measured alone as runtime artifacts, like
    the archs (same passes)."""
    task = supernet.task
    tokens = target.seq_len or task.seq_len
    rng = np.random.default_rng(seed)
    stems = [Subnet(supernet.stem.get_active_subnet(e), [], supernet.head.get_active_subnet(e), arch_json="{}").eval()
             for e in space.embed_dims]
    inputs = example_input(task, target)
    measured = measure_many([target.deploy(stem, inputs) for stem in stems], inputs, target, protocol, rng)
    table = {("stem_head", e): m.latency_ms for e, m in zip(space.embed_dims, measured, strict=True)}
    configs = []
    for i, choices in enumerate(space.layers[:1]):  # every layer has the same choices in this space
        for embed_dim in space.embed_dims:
            for heads, mlp, attention, bits in itertools.product(choices.num_heads, choices.mlp_dims(embed_dim),
                                                                 choices.mixer, choices.bits):
                configs.append((i, embed_dim, LayerArch(heads, mlp, attention, bits)))
    hidden = torch.randn(target.batch_size, tokens, max(space.embed_dims))
    for embed_dim in space.embed_dims:
        group = [(i, layer) for i, e, layer in configs if e == embed_dim]
        x = hidden[..., :embed_dim].contiguous()
        blocks = [target.deploy(_alone(supernet.blocks[i].get_active_subnet(embed_dim, layer)), x)
                  for i, layer in group]
        for (_, layer), m in zip(group, measure_many(blocks, x, target, protocol, rng), strict=True):
            table[(embed_dim, layer)] = m.latency_ms
    return table


def _alone(block: torch.nn.Module) -> Subnet:
    """A block as a model of its own, for the runtime to build."""
    return Subnet(torch.nn.Identity(), [block], torch.nn.Identity(), arch_json="{}").eval()


def lookup_predict(table: dict, archs) -> np.ndarray:
    return np.array([table[("stem_head", a.embed_dim)] + sum(table[(a.embed_dim, x)] for x in a.layers)
                     for a in archs])


def noise_floor(supernet: Supernet, space: SearchSpace, target: HardwareTarget, protocol: Protocol, x,
                seed: int) -> dict:
    """Ten random archs' artifacts, each measured 8 times with the protocol: how much a measurement repeats."""
    rng = np.random.default_rng(seed)
    probes = [target.deploy(supernet.extract(space.sample(rng)), x) for _ in range(10)]
    repeats = [measure_many(probes, x, target, protocol, rng) for _ in range(8)]
    medians = np.array([[m.latency_ms for m in repeat] for repeat in repeats]).T  # (model, repeat)
    return {"passes": protocol.passes,
            "cv_of_repeated_measurements_pct": float(np.median(medians.std(axis=1, ddof=1) / medians.mean(axis=1))
                                                     * 100),
            "round_to_round_cv_pct": float(np.median([m.pass_cv for r in repeats for m in r]) * 100),
            "within_burst_cv_pct": float(np.median([m.cv for r in repeats for m in r]) * 100)}


def largest_int8_effect(supernet: Supernet, space: SearchSpace, target: HardwareTarget, protocol: Protocol, x,
                        seed: int) -> dict:
    """The largest arch all-int8 beside all-fp32, as the target's programs."""
    largest = space.largest()
    programs = [target.deploy(supernet.extract(Arch(largest.embed_dim, tuple(replace(layer, bits=bits)
                                                                                 for layer in largest.layers))), x)
                for bits in (8, 32)]
    int8, fp32 = measure_many(programs, x, target, protocol, np.random.default_rng(seed))
    return {"arch": "largest", "int8_ms": int8.latency_ms, "fp32_ms": fp32.latency_ms,
            "ratio": int8.latency_ms / fp32.latency_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "configs/spaces/digits.yaml"))
    parser.add_argument("--archs", type=int, default=500, help="measured archs: up to 400 to train, the rest held out")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--passes", type=int, default=15, help="rounds of the side-by-side protocol")
    parser.add_argument("--chunk", type=int, default=500, help="archs measured side by side at once")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or ROOT / f"bench/results/latency_predictor_b{args.batch}.json")

    space = SearchSpace.from_yaml(args.space)
    task = load_task("digits", 0)
    supernet = Supernet(space, task.spec, seed=args.seed).eval()
    target = HardwareTarget(f"cpu-b{args.batch}", threads=1, batch_size=args.batch)
    protocol = Protocol(passes=args.passes)
    started = time.perf_counter()

    # 1. noise floor: ten models, each measured 8 times with the protocol the dataset uses
    x = example_input(task.spec, target)
    noise = noise_floor(supernet, space, target, protocol, x, args.seed)
    print("noise floor:", json.dumps(noise))

    # 2. the dataset, measured once for every method
    archs = stratified_archs(space, args.archs, np.random.default_rng(args.seed))
    records = list(measure_archs(supernet, archs, target, protocol, chunk=args.chunk,
                                 seed=args.seed))
    y = np.array([r.measurement.latency_ms for r in records])
    flagged = int(sum(r.measurement.flagged for r in records))
    order = np.random.default_rng(args.seed + 1).permutation(len(archs))
    held_out = order[400:] if len(archs) > 400 else order[int(0.8 * len(archs)):]
    pool = np.setdiff1d(order, held_out, assume_unique=True)
    pool = order[np.isin(order, pool)]  # keep the shuffled order
    X = latency_features(space, task.spec, target, archs)
    X_hat = layer_averaged(space, archs)

    train = pool[: args.train]
    ours = LatencyPredictor(random_state=args.seed).fit(X[train], y[train])
    hat = hat_mlp(args.seed).fit(X_hat[train], np.log(y[train]))
    table = lookup_table(supernet, space, target, protocol, args.seed)
    results = {
        "elastiq": {**ours.score(X[held_out], y[held_out]).to_dict(), "chosen": ours.chosen_,
                    "cv": ours.cv_scores_},
        "ofa_lookup_table": {**scores(y[held_out], lookup_predict(table, [archs[i] for i in held_out])).to_dict(),
                             "measurements": len(table)},
        "hat_mlp_layer_averaged": scores(y[held_out], np.exp(hat.predict(X_hat[held_out]))).to_dict(),
    }
    for name, result in results.items():
        print(f"{name:24s} MAPE {result['mape']:5.2f}%  RMSE {result['rmse']:.4f} ms  "
              f"Kendall tau {result['kendall_tau']:.3f}  Spearman {result['spearman']:.3f}")

    # 3. sample efficiency
    efficiency = []
    for n in (25, 50, 100, 200, 400):
        if n > len(pool):
            break
        subset = pool[:n]
        ours_n = LatencyPredictor(random_state=args.seed, cv=min(5, n // 5)).fit(X[subset], y[subset])
        hat_n = hat_mlp(args.seed).fit(X_hat[subset], np.log(y[subset]))
        row = {"n": n, "elastiq_mape": ours_n.score(X[held_out], y[held_out]).mape, "elastiq_chosen": ours_n.chosen_,
               "hat_mape": scores(y[held_out], np.exp(hat_n.predict(X_hat[held_out]))).mape}
        efficiency.append(row)
        print(f"n={n:3d}: elastiq MAPE {row['elastiq_mape']:.2f}% ({row['elastiq_chosen']}), "
              f"HAT-style MAPE {row['hat_mape']:.2f}%")

    # 4. the int8 effect the search relies on: the largest arch all-int8 beside all-fp32, as programs
    int8_effect = largest_int8_effect(supernet, space, target, protocol, x, args.seed)
    print("int8 effect, largest arch:", json.dumps(int8_effect))

    summary = {"target": target.to_dict(), "archs_measured": len(archs), "train": len(train),
               "held_out": len(held_out), "flagged": flagged, "latency_range_ms": [float(y.min()), float(y.max())],
               "noise_floor": noise, "results": results, "sample_efficiency": efficiency, "int8_effect": int8_effect,
               "seconds": time.perf_counter() - started}
    write_json(out, summary)
    print(f"written {out}")


if __name__ == "__main__":
    main()
