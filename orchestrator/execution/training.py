"""`elastiq train-supernet`: from a study config to a trained, checked checkpoint, in this
process or on a Ray Train group (`supernet.workers` > 1)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from pathlib import Path

import torch

from orchestrator.config import StudyConfig
from supernet.checkpoint import read_record
from supernet.device import DeviceError, MixedPrecision, resolve_device
from supernet.model import Supernet
from supernet.preflight import ensure_fits_in_memory
from supernet.pretrained.importing import ImportReport, import_pretrained, open_pretrained
from supernet.tasks import Task, load_task
from supernet.training.train import evaluate, load_resumable, load_supernet, train_supernet

log = logging.getLogger("elastiq")


def imported_supernet(config: StudyConfig, task: Task) -> tuple[Supernet, ImportReport]:
    """The study's supernet holding its pretrained model's weights (in importance order, measured on
    the first `calibration_samples` of a seeded shuffle of the training split, where asked)."""
    model = open_pretrained(config.supernet.pretrained)
    calibration = None
    if config.supernet.importance:
        x_train, _ = task.split("train")
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(config.seed))
        calibration = x_train[order[: config.supernet.calibration_samples]]
    return import_pretrained(model, config.space, task.spec, config.seed, calibration, task.labels)


def starting_model(config: StudyConfig, task: Task) -> Supernet:
    """The supernet training starts from: the pretrained model's weights on a first run, else a
    fresh one (a checkpoint, where there is one, then replaces its weights)."""
    if config.supernet.pretrained is not None and not Path(config.supernet.checkpoint).exists():
        model, report = imported_supernet(config, task)
        log.info("pretrained model %s: %s", config.supernet.pretrained, report.summary())
        return model
    return Supernet(config.space, task.spec, seed=config.seed)


def _worker_model(config: StudyConfig) -> tuple[Supernet, Task]:
    """What each Ray Train worker trains: its own copy of the task and of the starting model."""
    task = load_task(config.task.name, config.seed, config.task.options)
    return starting_model(config, task), task


def run_supernet_training(config: StudyConfig, progress: bool = True) -> str:
    """Train or continue; return a short summary for the terminal."""
    task = load_task(config.task.name, config.seed, config.task.options)
    ensure_fits_in_memory(config.space, task.spec, copies=4, purpose="train (weights, gradients, AdamW's moments)")
    checkpoint = Path(config.supernet.checkpoint)
    if config.supernet.workers > 1:
        if checkpoint.exists():  # what the workers would refuse, refused here, before a cluster is asked
            load_resumable(checkpoint, config.space, task, config.seed)
        started = time.perf_counter()
        where = train_on_cluster(config)
        record = read_record(checkpoint)
        # evaluated here: on this machine's GPU if it has one and the study does not say cpu
        here = "cpu" if config.supernet.device == "cpu" else "auto"
        model = load_supernet(checkpoint, config.space, task).to(resolve_device(here))
        head = f"supernet: {record['steps']} steps on {where} in {time.perf_counter() - started:.1f} s"
    else:
        device = resolve_device(config.supernet.device)
        model = starting_model(config, task)
        result = train_supernet(model, task, config.supernet.to_train_settings(), seed=config.seed,
                                checkpoint=checkpoint, task_options=config.task.options, progress=progress,
                                device=device)
        record = result.record
        precision = "" if device.type == "cpu" else f" ({MixedPrecision(device).describe()})"
        head = (f"supernet: {result.step} steps ({result.trained_now} now, {result.skipped_steps} skipped) "
                f"in {result.seconds:.1f} s on {device.type}{precision}")
    largest, smallest = config.space.largest(), config.space.smallest()
    lines = [head, f"  val {task.metric}: largest {evaluate(model, largest, task):.4f}, "
                   f"smallest {evaluate(model, smallest, task):.4f}"]
    if record is not None:
        lines.append(f"  checkpoint {checkpoint} (sha256 {record['sha256'][:16]})")
    return "\n".join(lines)


def train_on_cluster(config: StudyConfig) -> str:
    """Train on a Ray Train group in the Ray of `ray.address` (a local one if none), after checking
    that the cluster can hold the group and that every node reaches the checkpoint's directory.
    Returns where it trained, in words."""
    import ray

    from orchestrator.execution.executors import require_resources, start_ray
    from supernet.training.distributed import WorkerGroup, train_on_ray

    workers, cpus = config.supernet.workers, config.ray.cpus_per_worker
    started = start_ray(config.ray.address, num_cpus=os.cpu_count() or 1)
    try:
        gpus = ray.cluster_resources().get("GPU", 0.0)
        device = config.supernet.device
        if device == "cuda" and gpus == 0:
            raise DeviceError("supernet.device cuda: the Ray cluster has no GPU")
        use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
        require_resources("CPU", workers * cpus, f"supernet.workers {workers} x ray.cpus_per_worker {cpus}")
        if use_gpu:
            require_resources("GPU", workers, f"supernet.workers {workers} on cuda (a GPU each)")
        check_reachable_from_every_node(Path(config.supernet.checkpoint).resolve().parent)
        group = WorkerGroup(workers, use_gpu=use_gpu, cpus_per_worker=cpus, max_failures=config.ray.retries)
        log.info("training the supernet on %d Ray Train workers (%s)", workers, "cuda" if use_gpu else "cpu")
        train_on_ray(functools.partial(_worker_model, config), config.supernet.to_train_settings(), config.seed,
                     Path(config.supernet.checkpoint).resolve(), config.task.options, group)
    finally:
        if started:
            ray.shutdown()
    return f"{workers} Ray Train workers ({'cuda' if use_gpu else 'cpu'})"


class CheckpointUnreachable(DeviceError):
    """A node of the Ray cluster does not see the checkpoint's directory."""


def check_reachable_from_every_node(directory: Path, key: str = "supernet.checkpoint") -> None:
    """Check that every live node of the Ray cluster sees `directory` as this machine does: a probe
    file written here must be visible there. Leaves nothing behind (a directory it had to create
    for the probe included) if the check fails."""
    created = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    probe = directory / f".elastiq-reach-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
    except OSError as exc:
        raise CheckpointUnreachable(f"{key}: cannot write in {directory} ({exc.strerror})") from None
    try:
        blind = unreachable_nodes(str(probe))
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        for path in created:  # the deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise CheckpointUnreachable(
            f"{key}: {directory} is not reachable from Ray node(s) {', '.join(blind)}; on a cluster it must be "
            f"on storage every node mounts at the same path")


def unreachable_nodes(probe: str) -> list[str]:
    """The addresses of the live Ray nodes with CPUs on which `probe` is not visible."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0]
    sees = ray.remote(num_cpus=0)(os.path.exists)
    seen = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                    .remote(probe) for node in nodes])
    return [node.get("NodeManagerAddress", node["NodeID"]) for node, ok in zip(nodes, seen, strict=True) if not ok]


def describe_arch_accuracy(config: StudyConfig, arch_text: str, split: str) -> str:
    """`elastiq evaluate`: one arch's accuracy (a language model's perplexity) with inherited weights, and
    where they come from."""
    from search_space import Arch
    from supernet.checkpoint import CheckpointError
    from supernet.training.train import load_supernet

    space = config.space
    if arch_text in ("largest", "smallest"):
        arch = space.largest() if arch_text == "largest" else space.smallest()
    else:
        arch = Arch.from_json(arch_text)
        space.validate(arch)
    task = load_task(config.task.name, config.seed, config.task.options)
    checkpoint = Path(config.supernet.checkpoint)
    if checkpoint.exists():
        model = load_supernet(checkpoint, space, task)
        source = f"supernet checkpoint {checkpoint}"
    elif config.supernet.pretrained is not None:
        model, report = imported_supernet(config, task)
        source = f"pretrained model {config.supernet.pretrained}, not trained ({report.summary()})"
    else:
        raise CheckpointError(f"checkpoint {checkpoint}: no such file (run `elastiq train-supernet` first)")
    model.to(resolve_device(config.supernet.device))
    return f"{split} {task.metric} {evaluate(model, arch, task, split):.4f} of {arch.to_json()}\n  weights: {source}"
