"""Supernet training where the compute is: Ray Train DDP against one process, the sandwich's
overhead over static models, and several archs in one pass (`archs_per_pass`).

On the demo's digits study (its space, batch 128, lr), in one run:

1. throughput (samples/s of the training loop, start-up excluded): 1 process with 2 threads
   against 2 Ray Train workers with 1 thread each (goal >= 0.9x; `--parts throughput`: medians of
   alternating rounds, the workers with and without shared activation ranges); and one sandwich step of the
   supernet against the sum of one step of each of its archs as static models (goal <= 1.15x);
2. archs_per_pass 3 (the 3 students in one pass) against the plain sandwich: samples/s, and the
   inherited val accuracy (largest, smallest, 24 random archs) after the same steps;
3. equivalence: the weights and accuracies after the same steps, 1 process against 2 workers,
   with the space's int8 policies and with float32 only; beside them, the same process at 1 thread
   against 2 threads: the floor that the order of float sums alone makes.

    .venv/bin/python bench/supernet/distributed_training.py [--steps 300] [--parts distributed,archs_per_pass,overhead]
    .venv/bin/python bench/supernet/distributed_training.py --steps 150 --parts throughput --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.config import load_study_config
from orchestrator.execution.executors import start_ray
from search_space import SearchSpace
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.distributed import WorkerGroup, train_on_ray
from supernet.training.train import (
    SandwichStep,
    TrainSettings,
    evaluate,
    load_supernet,
    random_quantization,
    train_supernet,
)

ROOT = Path(__file__).resolve().parents[2]


def settings_of(config, steps: int, **changes) -> TrainSettings:
    s = config.supernet
    return TrainSettings(steps=steps, batch_size=s.batch_size, lr=s.lr, warmup_steps=min(s.warmup_steps, steps // 5),
                         sandwich_random=s.sandwich_random, checkpoint_every=steps, **changes)


def build(space_dict: dict, seed: int):
    space = SearchSpace.from_dict(space_dict)
    task = load_task("digits", seed)
    return Supernet(space, task.spec, seed=seed), task


def one_process(space: SearchSpace, settings: TrainSettings, seed: int, checkpoint: Path, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    model, task = build(space.to_dict(), seed)
    result = train_supernet(model, task, settings, seed, checkpoint=checkpoint, progress=False)
    return {"seconds": result.seconds, "samples_per_s": result.trained_now * settings.batch_size / result.seconds}


def ray_workers(space: SearchSpace, settings: TrainSettings, seed: int, checkpoint: Path, workers: int = 2,
                shared_ranges: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as timings:
        started = time.perf_counter()
        group = WorkerGroup(workers, cpus_per_worker=1, max_failures=0, shared_activation_ranges=shared_ranges)
        train_on_ray(functools.partial(build, space.to_dict(), seed), settings, seed, checkpoint, {}, group,
                     timings=timings)
        wall = time.perf_counter() - started
        loops = [json.loads(p.read_text()) for p in Path(timings).iterdir()]
    seconds = max(loop["seconds"] for loop in loops)
    return {"seconds": seconds, "wall_seconds": wall, "samples_per_s": settings.steps * settings.batch_size / seconds}


def throughput_rounds(space: SearchSpace, settings: TrainSettings, seed: int, work: Path, rounds: int) -> dict:
    """Samples/s of 1 process x 2 threads, 2 workers with shared activation ranges and 2 with their own,
    in `rounds` alternating rounds (the machine's drift hits all three alike); medians."""
    runs: dict[str, list[float]] = {"one_process": [], "two_workers": [], "two_workers_own_ranges": []}
    for index in range(rounds):
        runs["one_process"].append(one_process(space, settings, seed, work / f"tp-one-{index}.pt")["samples_per_s"])
        runs["two_workers"].append(ray_workers(space, settings, seed, work / f"tp-two-{index}.pt")["samples_per_s"])
        runs["two_workers_own_ranges"].append(ray_workers(space, settings, seed, work / f"tp-own-{index}.pt",
                                                          shared_ranges=False)["samples_per_s"])
    medians = {name: float(np.median(values)) for name, values in runs.items()}
    return {"rounds": rounds, "steps": settings.steps, "batch_size": settings.batch_size, "samples_per_s": runs,
            "median_samples_per_s": medians,
            "ratio": medians["two_workers"] / medians["one_process"],
            "ratio_own_ranges": medians["two_workers_own_ranges"] / medians["one_process"]}


def accuracies(space: SearchSpace, checkpoint: Path, seed: int, randoms: int = 24) -> dict:
    task = load_task("digits", seed)
    model = load_supernet(checkpoint, space, task)
    rng = np.random.default_rng(1234)
    archs = [space.sample(rng) for _ in range(randoms)]
    return {"largest": evaluate(model, space.largest(), task), "smallest": evaluate(model, space.smallest(), task),
            "random_mean": float(np.mean([evaluate(model, a, task) for a in archs]))}


def weight_difference(a: Path, b: Path) -> dict:
    wa, wb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    norm = float(torch.sqrt(sum((wa[k] - wb[k]).pow(2).sum() for k in wa)) /
                 torch.sqrt(sum(wa[k].pow(2).sum() for k in wa)))
    return {"max_abs": diff, "relative_l2": norm}


def sandwich_overhead(space: SearchSpace, config, seed: int, repeats: int) -> dict:
    """One sandwich step (forward, backward, AdamW) against one step of each arch as a static model,
    on the same batch, interleaved; 2 threads."""
    torch.set_num_threads(2)
    model, task = build(space.to_dict(), seed)
    settings = settings_of(config, 1)
    x, y = (t[: settings.batch_size] for t in task.split("train"))
    rng = np.random.default_rng(seed)
    largest = space.largest()
    students = [random_quantization(space.smallest(), space, rng)] + [space.sample(rng) for _ in range(2)]
    step_module = SandwichStep(model, settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    statics = [model.extract(a) for a in [largest, *students]]
    static_optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-6) for m in statics]

    def sandwich():
        optimizer.zero_grad(set_to_none=True)
        step_module(x, y, largest, students, 0)[0].backward()
        optimizer.step()

    def static(index):
        static_optimizers[index].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(statics[index](x), y).backward()
        static_optimizers[index].step()

    times = {"sandwich": [], "static_sum": []}
    for repeat in range(repeats + 5):
        start = time.perf_counter()
        sandwich()
        middle = time.perf_counter()
        for index in range(len(statics)):
            static(index)
        end = time.perf_counter()
        if repeat >= 5:
            times["sandwich"].append(middle - start)
            times["static_sum"].append(end - middle)
    sandwich_ms, static_ms = (float(np.median(v)) * 1e3 for v in times.values())
    return {"sandwich_ms": sandwich_ms, "static_sum_ms": static_ms, "ratio": sandwich_ms / static_ms,
            "archs": [a.to_json() for a in [largest, *students]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits.yaml"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the throughput part")
    parser.add_argument("--parts", default="distributed,archs_per_pass,overhead",
                        help="which measures to run; the others are kept from --out where it exists")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed_training.json"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    config = load_study_config(args.config)
    space, seed = config.space, config.seed
    fp32 = SearchSpace.from_dict({**space.to_dict(), "name": f"{space.name}-fp32",
                                  "layers": [{**layer, "bits": [32]} for layer in space.to_dict()["layers"]]})
    settings = settings_of(config, args.steps)
    out = Path(args.out)
    results: dict = json.loads(out.read_text()) if out.exists() and parts != {"distributed", "archs_per_pass",
                                                                               "overhead"} else {}
    if parts != {"throughput"}:  # the rounds keep their own steps
        results.update({"config": args.config, "steps": args.steps, "batch_size": settings.batch_size,
                        "cpus": os.cpu_count()})
    started_ray = start_ray(None, num_cpus=2)
    try:
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            runs = {}
            for name, run_space in (("int8", space), ("fp32", fp32)) if "distributed" in parts else ():
                runs[name] = {
                    "one_process": one_process(run_space, settings, seed, work / f"one-{name}.pt"),
                    "two_workers": ray_workers(run_space, settings, seed, work / f"two-{name}.pt"),
                    # the rounding floor: the same process at 1 thread sums in another order
                    "one_thread": one_process(run_space, settings, seed, work / f"thread-{name}.pt", threads=1),
                }
                if name == "int8":  # each worker quantizing with its own shard's activation range
                    runs[name]["two_workers_own_ranges"] = ray_workers(run_space, settings, seed,
                                                                       work / f"own-{name}.pt", shared_ranges=False)
                    runs[name]["weights_own_ranges"] = weight_difference(work / f"one-{name}.pt",
                                                                         work / f"own-{name}.pt")
                    runs[name]["accuracy_own_ranges"] = accuracies(run_space, work / f"own-{name}.pt", seed)
                runs[name]["weights"] = weight_difference(work / f"one-{name}.pt", work / f"two-{name}.pt")
                runs[name]["weights_one_thread"] = weight_difference(work / f"one-{name}.pt",
                                                                     work / f"thread-{name}.pt")
                runs[name]["accuracy_one_process"] = accuracies(run_space, work / f"one-{name}.pt", seed)
                runs[name]["accuracy_two_workers"] = accuracies(run_space, work / f"two-{name}.pt", seed)
                runs[name]["accuracy_one_thread"] = accuracies(run_space, work / f"thread-{name}.pt", seed)
                runs[name]["throughput_ratio"] = (runs[name]["two_workers"]["samples_per_s"]
                                                  / runs[name]["one_process"]["samples_per_s"])
                print(name, json.dumps(runs[name], indent=1))
                results["distributed"] = runs

            multi = {}
            for per_pass in (1, 3) if "archs_per_pass" in parts else ():
                path = work / f"pass-{per_pass}.pt"
                multi[per_pass] = one_process(space, settings_of(config, args.steps, archs_per_pass=per_pass), seed,
                                              path)
                multi[per_pass]["accuracy"] = accuracies(space, path, seed)
            if multi:
                multi["speedup"] = multi[3]["samples_per_s"] / multi[1]["samples_per_s"]
                print("archs_per_pass", json.dumps(multi, indent=1))
                results["archs_per_pass"] = multi
            if "throughput" in parts:
                results["throughput"] = throughput_rounds(space, settings, seed, work, args.rounds)
                print("throughput", json.dumps(results["throughput"], indent=1))
        if "overhead" in parts:
            results["sandwich_overhead"] = sandwich_overhead(space, config, seed, args.repeats)
            print("sandwich overhead", json.dumps(results["sandwich_overhead"], indent=1))
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
