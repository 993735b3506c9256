"""Train the learning-curve PFN on LC-PFN's prior, seeded, on the CPU, and write its weights and manifest.

The shipped weights (`predictors/curve_pfn/shipped/`) were written by

    .venv/bin/python -m predictors.curve_pfn.train --out predictors/curve_pfn/shipped

Each step draws `batch` curves of R rungs (R log-uniform in [2, `max_rungs`]) from the prior, shows the
network the first k (uniform in [1, R - 1]) and scores its bar distributions at every later rung (negative
log-likelihood of the change since rung k), as LC-PFN trains; AdamW with a linear warmup and a cosine decay.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from predictors.curve_pfn.network import BarDistribution, CurvePFN, PFNShape
from predictors.curve_pfn.prior import sample_curves
from predictors.curve_pfn.weights import save_pfn


def draw_rungs(rng: np.random.Generator, max_rungs: int) -> tuple[int, int]:
    rungs = int(np.exp(rng.uniform(np.log(2), np.log(max_rungs + 1))))
    return rungs, int(rng.integers(1, rungs))


NOISE_LOG_MEAN = -5.0  # the prior's noise (predictors.curve_pfn.prior)


def batch(rng: np.random.Generator, size: int, rungs: int, seen: int) -> tuple[torch.Tensor, ...]:
    curves = sample_curves(rng, size, rungs, noise_log_mean=NOISE_LOG_MEAN)
    progress = torch.from_numpy(curves.progress).float()
    values = torch.from_numpy(curves.values).float()
    # the targets are changes since the last value seen (what the network's bar distribution is of)
    return progress[:, :seen], values[:, :seen], progress[:, seen:], values[:, seen:] - values[:, seen - 1:seen]


def prior_borders(rng: np.random.Generator, buckets: int, max_rungs: int, curves: int = 100_000) -> torch.Tensor:
    """Bucket borders at the quantiles of the prior's changes (a later value less the last one seen), so that
    each bucket holds as many."""
    changes = []
    for _ in range(curves // 1000):
        rungs, seen = draw_rungs(rng, max_rungs)
        values = sample_curves(rng, 1000, rungs, noise_log_mean=NOISE_LOG_MEAN).values
        changes.append((values[:, seen:] - values[:, seen - 1:seen]).ravel())
    values = np.concatenate(changes)
    borders = np.quantile(values, np.linspace(0, 1, buckets + 1))
    return torch.from_numpy(np.maximum.accumulate(borders + np.arange(buckets + 1) * 1e-12))


def validation_loss(model: CurvePFN, bars: BarDistribution, fixed: list[tuple[torch.Tensor, ...]]) -> float:
    with torch.no_grad():
        return float(np.mean([-bars.log_density(model(p, v, q), t).mean().item() for p, v, q, t in fixed]))


def train(steps: int, batch_size: int, max_rungs: int, seed: int, shape: PFNShape, lr: float,
          log_every: int = 200) -> tuple[CurvePFN, torch.Tensor, dict]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    borders = prior_borders(rng, shape.buckets, max_rungs)
    bars = BarDistribution(borders)
    # held-out prior curves of the default budget (6 rungs), seen after 2 and after 5
    fixed = [batch(rng, 2048, 6, seen) for seen in (2, 5)]
    model = CurvePFN(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / steps))))
    started, seen_curves, history = time.perf_counter(), 0, []
    for step in range(steps):
        rungs, seen = draw_rungs(rng, max_rungs)
        progress, values, queries, targets = batch(rng, batch_size, rungs, seen)
        loss = -bars.log_density(model(progress, values, queries), targets).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        seen_curves += batch_size
        if (step + 1) % log_every == 0 or step + 1 == steps:
            model.eval()
            held_out = validation_loss(model, bars, fixed)
            model.train()
            history.append({"step": step + 1, "seconds": round(time.perf_counter() - started, 1),
                            "held_out_nll": round(held_out, 4)})
            print(history[-1], flush=True)
    training = {"script": "predictors/curve_pfn/train.py", "seed": seed, "steps": steps, "batch": batch_size,
                "max_rungs": max_rungs, "lr": lr, "noise_log_mean": NOISE_LOG_MEAN, "curves_seen": seen_curves,
                "wall_s": round(time.perf_counter() - started, 1), "threads": torch.get_num_threads(),
                "held_out_nll": history[-1]["held_out_nll"], "history": history,
                "torch": torch.__version__, "machine": platform.machine()}
    return model.eval(), borders, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max-rungs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = PFNShape()
    model, borders, training = train(args.steps, args.batch, args.max_rungs, args.seed, shape, args.lr)
    manifest = save_pfn(args.out, model, borders, training)
    print(f"wrote {args.out} ({manifest['bytes']} bytes, sha256 {manifest['sha256'][:16]}...)")


if __name__ == "__main__":
    main()
