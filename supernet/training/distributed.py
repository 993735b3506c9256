"""Supernet training on Ray Train: DDP over several workers (gloo on CPU, NCCL on GPU).

Every worker runs `train_supernet` with a `RayTrainWorld`: the same archs and
quantization policies at each step (drawn from the same seeded generators), its
own shard of each batch, gradients averaged by DistributedDataParallel (with
unused parameters allowed: a subnet leaves some untouched), and the fake
quantization's activation ranges taken over the whole batch (an all-reduce),
so that the group computes what one process would. Rank 0 writes the
usual checked checkpoint, which does not depend on the number of workers: a
run resumes from it with any number, and a worker that dies makes Ray Train
restart the group, which continues from the last checkpoint. The checkpoint's
path must therefore be on storage every worker's node reaches.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from search_space import InputError, RunFailed
from supernet.model import Supernet
from supernet.quant import shared_activation_ranges
from supernet.tasks import Task
from supernet.training.loop import World
from supernet.training.train import SandwichStep, TrainSettings, train_supernet


class DistributedTrainingFailed(RunFailed):
    """The workers failed on every retry (not for bad input); the message is the first worker's error."""


@dataclass(frozen=True)
class WorkerGroup:
    workers: int
    use_gpu: bool = False
    cpus_per_worker: int = 1  # also the torch threads of each worker
    max_failures: int = 2  # restarts of the group (from the last checkpoint) after a worker dies
    # int8 policies quantize activations with the whole batch's range (one all-reduce per quantized layer), as
    # one process would; False: each worker's shard's range (faster where collectives are slow)
    shared_activation_ranges: bool = True


class RayTrainWorld(World):
    """This worker's place in the Ray Train group."""

    def __init__(self, shared_ranges: bool = True):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.size = context.get_world_rank(), context.get_world_size()
        self.shared_ranges = shared_ranges

    def prepare(self, step: SandwichStep) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(step, parallel_strategy_kwargs={"find_unused_parameters": True})

    def activation_ranges(self):
        return shared_activation_ranges(_whole_batch_range) if self.shared_ranges else super().activation_ranges()

    def all_true(self, flag: bool) -> bool:
        import ray.train.torch

        vote = torch.tensor([int(flag)], device=ray.train.torch.get_device())
        dist.all_reduce(vote, op=dist.ReduceOp.MIN)
        return bool(vote.item())

    def report(self, step: int, loss: float) -> None:
        import ray.train

        ray.train.report({"step": step, "loss": loss})


def _whole_batch_range(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The range over every worker's shard: one all-reduce (the max of -low and of high)."""
    both = torch.stack([-low, high]).float()
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return -both[0].to(low.dtype), both[1].to(high.dtype)


def _train_worker(job: dict) -> None:
    import ray.train.torch

    torch.set_num_threads(job["threads"])
    model, task = job["build"]()
    world = RayTrainWorld(job["shared_ranges"])
    result = train_supernet(model, task, job["settings"], job["seed"], checkpoint=job["checkpoint"],
                            task_options=job["task_options"], progress=False, device=ray.train.torch.get_device(),
                            world=world)
    if job["timings"] is not None:
        timing = {"rank": world.rank, "steps": result.step, "trained_now": result.trained_now,
                  "seconds": result.seconds}
        (Path(job["timings"]) / f"rank-{world.rank}.json").write_text(json.dumps(timing))


def train_on_ray(build: Callable[[], tuple[Supernet, Task]], settings: TrainSettings, seed: int,
                 checkpoint: str | Path, task_options: dict, group: WorkerGroup, timings: str | None = None) -> None:
    """Train to `settings.steps` on a Ray Train group in the running Ray; `build` makes each
    worker's model and task (it runs in the worker, so it must be picklable). Where `timings` names
    a directory, each worker writes there the seconds its training loop took (benchmarks)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = tempfile.mkdtemp(prefix="elastiq-train-")  # Ray Train's run state; the checkpoint is ours
    try:
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"build": build, "settings": settings, "seed": seed, "checkpoint": str(checkpoint),
                               "task_options": task_options, "threads": group.cpus_per_worker,
                               "timings": timings, "shared_ranges": group.shared_activation_ranges},
            torch_config=TorchConfig(backend="nccl" if group.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=group.workers, use_gpu=group.use_gpu,
                resources_per_worker={"CPU": group.cpus_per_worker, **({"GPU": 1} if group.use_gpu else {})}),
            run_config=ray.train.RunConfig(name="elastiq-supernet", storage_path=storage,
                                           failure_config=ray.train.FailureConfig(max_failures=group.max_failures)))
        try:
            trainer.fit()
        except ray.train.TrainingFailedError as exc:
            cause, text = _first_worker_error(exc)
            # bad input found by a worker (a diverging lr, a corrupt checkpoint) stays bad input
            raise (InputError(text) if isinstance(cause, InputError) else DistributedTrainingFailed(text)) from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _first_worker_error(exc: Exception) -> tuple[BaseException, str]:
    """The lowest failed rank's own exception and one line saying it."""
    failures = getattr(exc, "worker_failures", None) or {}
    if not failures:
        return exc, f"supernet training failed on Ray Train: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    rank = min(failures)
    cause = failures[rank]
    cause = getattr(cause, "cause", None) or cause  # a RayTaskError holds the worker's own exception
    lines = [line for line in str(cause).splitlines() if line.strip()]
    text = lines[-1] if lines else type(cause).__name__
    if isinstance(cause, InputError):
        return cause, text
    return cause, f"supernet training failed on Ray Train worker {rank} after every retry: {text}"
