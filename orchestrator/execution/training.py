"""`elastiq train-supernet`: from a study config to a trained, checked checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from orchestrator.config import StudyConfig
from supernet.model import Supernet, ensure_fits_in_memory
from supernet.pretrained.importing import ImportReport, import_pretrained, open_pretrained
from supernet.tasks import Task, load_task
from supernet.train import TrainSettings, evaluate, train_supernet

log = logging.getLogger("elastiq")


IMPORT_KEYS = {"checkpoint", "pretrained", "importance", "calibration_samples"}  # not the training's


def train_settings(config: StudyConfig) -> TrainSettings:
    return TrainSettings(**config.supernet.model_dump(exclude=IMPORT_KEYS))


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


def run_supernet_training(config: StudyConfig, progress: bool = True) -> str:
    """Train or continue; return a short summary for the terminal."""
    task = load_task(config.task.name, config.seed, config.task.options)
    ensure_fits_in_memory(config.space, task.spec, copies=4, purpose="train (weights, gradients, AdamW's moments)")
    checkpoint = Path(config.supernet.checkpoint)
    if config.supernet.pretrained is not None and not checkpoint.exists():
        model, report = imported_supernet(config, task)
        log.info("pretrained model %s: %s", config.supernet.pretrained, report.summary())
    else:
        model = Supernet(config.space, task.spec, seed=config.seed)
    result = train_supernet(model, task, train_settings(config), seed=config.seed, checkpoint=checkpoint,
                            task_options=config.task.options, progress=progress)
    largest, smallest = config.space.largest(), config.space.smallest()
    lines = [f"supernet: {result.step} steps ({result.trained_now} now, {result.skipped_steps} skipped) "
             f"in {result.seconds:.1f} s",
             f"  val accuracy: largest {evaluate(model, largest, task):.4f}, "
             f"smallest {evaluate(model, smallest, task):.4f}"]
    if result.record is not None:
        lines.append(f"  checkpoint {checkpoint} (sha256 {result.record['sha256'][:16]})")
    return "\n".join(lines)


def evaluate_arch(config: StudyConfig, arch_text: str, split: str) -> str:
    """`elastiq evaluate`: one arch's accuracy with inherited weights, and where they come from."""
    from search_space import Arch
    from supernet.checkpoint import CheckpointError
    from supernet.train import load_supernet

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
    return f"{split} accuracy {evaluate(model, arch, task, split):.4f} of {arch.to_json()}\n  weights: {source}"
