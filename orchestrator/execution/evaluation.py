"""What a worker computes for one arch: accuracy with inherited weights (optionally
after a few fine-tuning steps) and the analytic costs; and, where asked, what the
target's holder computes for a batch: the latency of the deployed models, measured
beside drift probes. Workers compute and return; the driver records.

A worker process loads each supernet checkpoint once (checked against its
sha256) and keeps it for every later trial.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from predictors.cost import arch_costs, cost_metrics
from predictors.measure import LatencyMeasurement, Protocol, example_input, measure_beside_probes
from predictors.target import HardwareTarget
from search_space import Arch, SearchSpace
from search_space.layer_genes import has_boundaries
from supernet.device import resolve_device
from supernet.tasks import load_task
from supernet.training.finetune import Finetuner, FinetuneSettings
from supernet.training.train import evaluate, load_supernet


@dataclass(frozen=True)
class EvalJob:
    arch: str  # Arch JSON
    checkpoint: str
    checkpoint_sha256: str
    space: str  # canonical space JSON
    task: str
    task_options: str  # JSON
    seed: int
    split: str = "val"
    finetune_steps: int = 0
    target: HardwareTarget = HardwareTarget()
    device: str = "cpu"  # where accuracy is computed (supernet.device); auto: the GPU this worker was given, if any


@functools.lru_cache(maxsize=4)
def _loaded(checkpoint: str, sha256: str, space_json: str, task: str, task_options: str, seed: int):
    space = SearchSpace.from_dict(json.loads(space_json))
    task_data = load_task(task, seed, json.loads(task_options))
    return space, task_data, load_supernet(checkpoint, space, task_data, expected_sha256=sha256)


def _source(job: EvalJob) -> tuple:
    """What a job's supernet and task are loaded from (the cache key)."""
    return job.checkpoint, job.checkpoint_sha256, job.space, job.task, job.task_options, job.seed


def _context(job: EvalJob):
    return _loaded(*_source(job))


@functools.lru_cache(maxsize=2)
def _supernet_on(source: tuple, device: str) -> torch.nn.Module:
    """The loaded supernet on `device` (a copy, kept: latency is measured from the CPU one)."""
    supernet = _loaded(*source)[2]
    return supernet if device == "cpu" else copy.deepcopy(supernet).to(device)


def static_model(supernet, arch: Arch, task, finetune_steps: int, seed: int,
                 device: torch.device | str = "cpu") -> torch.nn.Module:
    """The static model whose accuracy a search records: extracted, then fine-tuned if asked."""
    model = supernet.extract(arch)
    if finetune_steps > 0:  # on the labels alone, with fine-tuning's default settings
        Finetuner(model, task, FinetuneSettings(steps=finetune_steps), seed=seed, device=device).train(finetune_steps)
    return model.eval()


def evaluate_arch(job: EvalJob) -> dict[str, Any]:
    """The task's metric (accuracy, or a language model's perplexity) and the analytic costs of one arch
    (deterministic for a given job)."""
    torch.set_num_threads(threads_given())  # workers run side by side, each on the CPUs it was given
    started = time.perf_counter()
    space, task, _ = _context(job)
    device = resolve_device(job.device)
    supernet = _supernet_on(_source(job), device.type)
    arch = space.validate(Arch.from_json(job.arch))
    if job.finetune_steps > 0:
        model = static_model(supernet, arch, task, job.finetune_steps, job.seed, device)
        quality = evaluate(model, None, task, job.split)
    else:
        quality = evaluate(supernet, arch, task, job.split)
    target = job.target
    stages = {}  # an arch with stage boundaries: each stage's tokens and MACs, for the report
    if has_boundaries(arch):
        for k, stage in enumerate(arch_costs(space, task.spec, arch, target.batch_size, target.seq_len).stages):
            stages.update({f"stage{k}_tokens": stage["tokens"], f"stage{k}_macs": stage["macs"]})
    return {task.metric: quality, **cost_metrics(space, task.spec, arch, target), **stages,
            "eval_seconds": time.perf_counter() - started}


def measure_beside(jobs: list[EvalJob], probes: list[tuple[str, dict[str, Any]]], protocol: Protocol,
                   seed: int) -> dict[str, Any]:
    """Latency of the artifacts of `jobs` (really quantized) on their target's runtime, measured
    side by side with drift probes (arch JSON and stored measurement of archs of the target's dataset):
    {"measurements": one dict per job, on the dataset's scale, "check": the probes' verdict, "node": ...}."""
    space, task, supernet = _context(jobs[0])
    target = jobs[0].target
    inputs = example_input(task.spec, target)

    def program(arch_json: str):
        return target.deploy(supernet.extract(space.validate(Arch.from_json(arch_json))), inputs)

    _normal_priority()
    measured, check = measure_beside_probes(
        [program(job.arch) for job in jobs], [program(arch) for arch, _ in probes],
        [LatencyMeasurement(**reference) for _, reference in probes], inputs, target, protocol,
        np.random.default_rng(seed))
    return {"measurements": [m.to_dict() for m in measured], "check": check.to_dict(), "node": current_node()}


def _normal_priority() -> None:
    """Bring this process's niceness back to 0 where allowed: Ray runs workers at 15 unless told
    otherwise, and a measurement at 15 loses the CPU to everything else (the probes would still
    catch it, at the price of refusals)."""
    if os.getpriority(os.PRIO_PROCESS, 0) > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except PermissionError:  # lowering niceness takes CAP_SYS_NICE
            pass


def _ray_if_running():
    """Ray's module where this process runs inside Ray, else None. A process that never imported Ray
    is not in it: evaluating alone, in-process, neither needs Ray installed nor pays its import."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def threads_given() -> int:
    """The CPUs Ray gave this worker (1 outside Ray, where trials run one after another)."""
    ray = _ray_if_running()
    if ray is None:
        return 1
    try:
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except AssertionError:  # a driver with Ray running: no resources assigned to it
        return 1


def current_node() -> str:
    """The Ray node this runs on ("local" outside Ray): recorded with each trial."""
    ray = _ray_if_running()
    return "local" if ray is None else ray.get_runtime_context().get_node_id()
