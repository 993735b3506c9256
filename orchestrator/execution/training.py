"""`elastiq train-supernet`: from a study config to a trained, checked checkpoint."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import StudyConfig
from supernet.model import Supernet, ensure_fits_in_memory
from supernet.tasks import load_task
from supernet.train import TrainSettings, evaluate, train_supernet


def train_settings(config: StudyConfig) -> TrainSettings:
    return TrainSettings(**config.supernet.model_dump(exclude={"checkpoint"}))


def run_supernet_training(config: StudyConfig, progress: bool = True) -> str:
    """Train or continue; return a short summary for the terminal."""
    task = load_task(config.task.name, config.seed, config.task.options)
    ensure_fits_in_memory(config.space, task.spec, copies=4, purpose="train (weights, gradients, AdamW's moments)")
    model = Supernet(config.space, task.spec, seed=config.seed)
    checkpoint = Path(config.supernet.checkpoint)
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
