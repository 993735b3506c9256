"""Supernet quality, ranking fidelity and quantization (digits by default; MNIST-1D with --config).

Trains the supernet of a study config (or continues its checkpoint), then:
  1. quality: the largest and smallest archs with inherited weights vs the same
     archs trained alone for the same number of steps (bar: within 2 points);
  2. ranking fidelity: Kendall tau between inherited-weight and standalone
     accuracy over random subnets spanning depth, attention types and bit
     widths (MNIST-1D goal: >= 0.75), and within archs of the same depth (goal:
     >= 0.5; size alone must not explain it). Beside it, the noise floor: the
     Kendall tau between the val and the test accuracy of the same archs trained
     alone (and with inherited weights);
  3. quantization: every layer at 8 bits vs every layer at 32 bits, same arch
     and weights, no retraining (bar: drop <= 1 point).
The gaps (1, 3) are on the val and test splits together (540 images on
digits); the ranking (2) is on val, as a search ranks, and on test.

    .venv/bin/python bench/supernet/supernet_quality.py [--steps N] [--subnets 20] [--standalone-steps N] [--jobs 2]
    .venv/bin/python bench/supernet/supernet_quality.py --config configs/mnist1d.yaml --subnets 24 \\
        --standalone-steps 1000
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
from scipy.stats import kendalltau, spearmanr

from bench.common import write_json
from orchestrator.config import load_study_config
from search_space import Arch, LayerArch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import evaluate, train_standalone, train_supernet

ROOT = Path(__file__).resolve().parents[2]


def holdout_accuracy(model, arch, task) -> float:
    return holdout_of(split_accuracies(model, arch, task), task)


def holdout_of(splits: dict[str, float], task) -> float:
    """Accuracy on val and test together, from the accuracy on each."""
    sizes = {split: len(task.split(split)[1]) for split in splits}
    return sum(splits[split] * sizes[split] for split in splits) / sum(sizes.values())


def with_bits(arch: Arch, bits: int) -> Arch:
    return Arch(arch.embed_dim, tuple(LayerArch(x.num_heads, x.mlp_dim, x.mixer, bits) for x in arch.layers))


def split_accuracies(model, arch, task) -> dict[str, float]:
    return {split: evaluate(model, arch, task, split) for split in ("val", "test")}


def within_depth_tau(depths, a, b) -> tuple[float, int]:
    """Kendall tau computed within each depth, averaged with weights by pairs; and the number of pairs."""
    total, pairs = 0.0, 0
    for depth in sorted(set(depths)):
        chosen = [i for i, d in enumerate(depths) if d == depth]
        n = len(chosen) * (len(chosen) - 1) // 2
        tau = kendalltau([a[i] for i in chosen], [b[i] for i in chosen]).statistic if n >= 3 else float("nan")
        if np.isfinite(tau):
            total, pairs = total + tau * n, pairs + n
    return (total / pairs if pairs else float("nan")), pairs


def _standalone(job) -> tuple[str, tuple[float, int, float, dict]]:
    """One arch trained alone, in a worker process with one thread."""
    name, arch_json, index, steps, config_path, seed, overrides = job
    torch.set_num_threads(1)
    config = load_study_config(config_path, overrides)
    task = load_task(config.task.name, config.seed, config.task.options)
    settings = replace(config.supernet.to_train_settings(), steps=steps)
    model = Supernet(config.space, task.spec, seed=10_000 + index).extract(Arch.from_json(arch_json))
    started = time.perf_counter()
    train_standalone(model, task, settings, seed=seed + index)
    seconds = time.perf_counter() - started
    splits = split_accuracies(model, None, task)
    return name, (holdout_of(splits, task), steps, seconds, splits)


def trained_alone(args, archs: dict, steps: int, seed: int, overrides: dict) -> dict:
    """Each arch trained alone (the random ones for `--standalone-steps`), `--jobs` at a time, or taken from
    `--standalone-from` where the same arch trained as long: name -> (accuracy, steps, seconds, splits)."""
    jobs = []
    for i, (name, arch) in enumerate(archs.items()):
        alone_steps = steps if name in ("largest", "smallest") else (args.standalone_steps or steps)
        jobs.append((name, arch.to_json(), i, alone_steps, args.config, seed, overrides))
    standalone = {}
    if args.standalone_from:  # the same name, arch and steps: the same training
        steps_of = {job[0]: job[3] for job in jobs}
        for row in json.loads(Path(args.standalone_from).read_text())["rows"]:
            name = row["name"]
            if name in archs and row["arch"] == archs[name].to_dict() and row["standalone_steps"] == steps_of[name]:
                standalone[name] = (row["standalone"], row["standalone_steps"], 0.0, row["standalone_splits"])
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        standalone |= dict(pool.imap_unordered(_standalone, [job for job in jobs if job[0] not in standalone]))
    return standalone


def random_subnets_ranking(rows: list[dict]) -> tuple[dict, dict]:
    """The ranking on the random subnets alone, per split, as a search ranks on val (Kendall tau, overall and
    within a depth), and how far val and test agree for each kind of training (the ranking's noise floor)."""
    random_rows = [r for r in rows if r["name"].startswith("random")]
    ranking = {}
    for split in ("val", "test"):
        a = [r["inherited_splits"][split] for r in random_rows]
        b = [r["standalone_splits"][split] for r in random_rows]
        within, pairs = within_depth_tau([r["depth"] for r in random_rows], a, b)
        ranking[split] = {"kendall_tau": float(kendalltau(a, b).statistic), "within_depth_tau": float(within),
                          "within_depth_pairs": pairs}
    noise_floor = {kind: float(kendalltau([r[f"{kind}_splits"]["val"] for r in random_rows],
                                          [r[f"{kind}_splits"]["test"] for r in random_rows]).statistic)
                   for kind in ("standalone", "inherited")}
    return ranking, noise_floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/digits.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="supernet and standalone steps (default: config)")
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--standalone-steps", type=int, default=None,
                        help="steps of the random subnets trained alone (default: the supernet's)")
    parser.add_argument("--jobs", type=int, default=2, help="standalone trainings in parallel, one thread each")
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/bench/supernet_quality.pt"))
    parser.add_argument("--standalone-from", default=None,
                        help="a previous results file whose archs trained alone for the same steps are reused: "
                             "training alone is deterministic for an arch, its index and the seed")
    parser.add_argument("--out", default=None,
                        help="default: bench/results/supernet_quality.json (digits), supernet_quality_TASK.json")
    args = parser.parse_args()

    overrides = {"supernet.checkpoint": args.checkpoint}
    if args.steps:
        overrides["supernet.steps"] = args.steps
    config = load_study_config(args.config, overrides)
    space, settings = config.space, config.supernet.to_train_settings()
    task = load_task(config.task.name, config.seed, config.task.options)

    supernet = Supernet(space, task.spec, seed=config.seed)
    result = train_supernet(supernet, task, settings, seed=config.seed, checkpoint=args.checkpoint,
                            task_options=config.task.options, progress=True)
    print(f"supernet: {result.step} steps ({result.seconds:.0f} s this run)")
    supernet.eval()

    rng = np.random.default_rng(config.seed + 1)
    archs = {"largest": space.largest(), "smallest": space.smallest()}
    # random subnets: attention types and bit widths drawn per layer, so both vary across the set
    archs.update({f"random{i:02d}": space.sample(rng) for i in range(args.subnets)})

    standalone = trained_alone(args, archs, settings.steps, config.seed, overrides)
    rows = []
    for name, arch in archs.items():
        inherited_splits = split_accuracies(supernet, arch, task)
        inherited = holdout_of(inherited_splits, task)
        accuracy, steps, seconds, alone_splits = standalone[name]
        rows.append({"name": name, "arch": arch.to_dict(), "inherited": inherited, "standalone": accuracy,
                     "inherited_splits": inherited_splits, "standalone_splits": alone_splits,
                     "standalone_steps": steps, "depth": arch.depth, "attention": [x.mixer for x in arch.layers],
                     "bits": [x.bits for x in arch.layers]})
        print(f"{name:9s} depth {arch.depth} embed {arch.embed_dim:3d} inherited {inherited:.4f} "
              f"standalone {accuracy:.4f} ({steps} steps, {seconds:.0f} s)", flush=True)

    inherited = np.array([r["inherited"] for r in rows])
    standalone = np.array([r["standalone"] for r in rows])
    tau = kendalltau(inherited, standalone).statistic
    rho = spearmanr(inherited, standalone).statistic
    ranking, noise_floor = random_subnets_ranking(rows)
    quant = []
    for name, arch in list(archs.items())[:8]:
        fp32 = holdout_accuracy(supernet, with_bits(arch, 32), task)
        int8 = holdout_accuracy(supernet, with_bits(arch, 8), task)
        quant.append({"name": name, "fp32": fp32, "int8": int8, "drop_points": 100 * (fp32 - int8)})
    summary = {
        "task": config.task.name, "steps": result.step, "subnets": len(rows),
        "standalone_steps_random": args.standalone_steps or settings.steps,
        "largest_gap_points": 100 * (rows[0]["standalone"] - rows[0]["inherited"]),
        "smallest_gap_points": 100 * (rows[1]["standalone"] - rows[1]["inherited"]),
        "kendall_tau": float(tau), "spearman": float(rho),
        "random_subnets_ranking": ranking, "val_vs_test_kendall_tau": noise_floor,
        "int8_drop_points_median": float(np.median([q["drop_points"] for q in quant])),
        "int8_drop_points_max": float(np.max([q["drop_points"] for q in quant])),
    }
    print(json.dumps(summary, indent=2))
    out = Path(args.out or ROOT / "bench/results" / ("supernet_quality.json" if config.task.name == "digits"
                                                      else f"supernet_quality_{config.task.name}.json"))
    write_json(out, {"summary": summary, "rows": rows, "quantization": quant})


if __name__ == "__main__":
    main()
