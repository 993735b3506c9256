"""What a search needs before anything is written: a Ray cluster or a device that answers, a supernet
checkpoint of the config's seed and data split, a study evaluated with that supernet, and latency
measurements where an objective needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from orchestrator.config import ConfigError, StudyConfig
from orchestrator.execution.executors import check_ray_address
from orchestrator.search.latency_model import MIN_MEASUREMENTS
from orchestrator.search.objectives import Objectives
from orchestrator.storage.latency import latency_dataset
from orchestrator.storage.schema import StorageError, connect
from orchestrator.storage.study import SUPERNET_ATTR, check_compatible, database_exists, find_study
from predictors.target import HardwareTarget, decode_context
from supernet.checkpoint import load_checkpoint
from supernet.device import resolve_device
from supernet.tasks import load_task


def check_before_search(config: StudyConfig, objectives: Objectives,
                        target: HardwareTarget) -> tuple[Any, str, optuna.Study | None]:
    """The task, the supernet checkpoint's sha256 and the study (None: new) of a search that can run: refused
    in one line, before anything is written, where it cannot."""
    check_where_it_runs(config)
    task = load_task(config.task.name, config.seed, config.task.options)
    if task.spec.style.causal:
        decode_context(target, task.spec)  # a context past the model's positions
    checkpoint = Path(config.supernet.checkpoint)
    if not checkpoint.exists():
        raise StorageError(f"no supernet checkpoint at {checkpoint}: run `elastiq train-supernet -c CONFIG` first")
    _, record = load_checkpoint(checkpoint, config.space, task.name)
    options = config.task.options if config.task.name == record.get("task") else record.get("task_options", {})
    if (record.get("seed"), record.get("task_options", {})) != (config.seed, options):
        # they fix the train/val split: another would score archs on images the supernet trained on
        # (a task loaded from module:function names its own options: compared by seed alone)
        raise StorageError(f"checkpoint {checkpoint} was trained with seed {record.get('seed')} and task options "
                           f"{record.get('task_options', {})}, which fix its data split; the config has seed "
                           f"{config.seed} and {config.task.options} (search.seed varies the search alone)")
    study = find_study(config.storage, config.study)
    if study is not None:
        check_compatible(config, study)
        stored_sha = study.user_attrs.get(SUPERNET_ATTR)
        if stored_sha != record["sha256"]:
            raise StorageError(f"study {config.study!r} was evaluated with supernet sha256 {str(stored_sha)[:12]}, "
                               f"but {checkpoint} has {record['sha256'][:12]}; use another study name")
    if objectives.needs_latency:
        if not database_exists(config.storage):
            raise StorageError(f"target {target.name!r} has no latency measurements in {config.storage}; "
                               f"run `elastiq measure -c CONFIG` first")
        engine = connect(config.storage, create=False)
        try:
            archs, _, flagged = latency_dataset(engine, target)
        except Exception as exc:
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"target {target.name!r} has no latency measurements; run "
                               f"`elastiq measure -c CONFIG` first") from None
        finally:
            engine.dispose()
        usable = int((~flagged).sum())  # flagged measurements never train the predictor
        if usable < MIN_MEASUREMENTS:
            raise StorageError(f"target {target.name!r} has {usable} unflagged latency measurements "
                               f"({len(archs) - usable} flagged); at least {MIN_MEASUREMENTS} are needed (run "
                               f"`elastiq measure -c CONFIG`, which also measures flagged ones again)")
    return task, record["sha256"], study


def check_where_it_runs(config: StudyConfig) -> None:
    """A Ray cluster that answers; evaluations on cuda need a GPU: here (local) or given to each
    Ray worker."""
    device = config.supernet.device
    if config.search.executor == "local":
        resolve_device(device)
        return
    check_ray_address(config.ray.address)
    if device == "cuda" and config.ray.gpus_per_worker == 0:
        raise ConfigError("supernet.device cuda: the Ray evaluation workers get no GPU; set ray.gpus_per_worker "
                          "(a fraction lets several share one)")
