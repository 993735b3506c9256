"""Supernet training: the sandwich rule, resumable.

Each step trains the largest arch, the smallest and `sandwich_random` random
archs on the labels; the random archs' mean loss counts `random_weight` (the
largest's and the smallest's count 1 each). In-place distillation (BigNAS,
Once-for-All) is an option: the students then learn from the largest's soft
predictions, mixed with the labels by `distill_weight` from step
`distill_start` on (it is off by default: through random students it pulled
the largest arch down by 40 points on MNIST-1D). Every arch but the largest
gets a random quantization policy. AdamW, linear warm-up then cosine decay,
gradient clipping. A non-finite loss or gradient skips the step; too many in
a row abort with a clear message, and a checkpoint is never written with
non-finite weights.

An imported supernet may learn from the pretrained model instead (`teacher`
"pretrained"): its largest arch is fine-tuned alone for `teacher_steps` steps
(a bare encoder's classifier is new), then a frozen copy of it teaches every
arch of the sandwich, the largest included; the copy is kept in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from search_space import Arch, InputError, LayerArch
from supernet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from supernet.model import Supernet
from supernet.tasks import Task

log = logging.getLogger("elastiq.supernet")


class TrainingDiverged(InputError):
    """The loss stayed non-finite: the settings (usually the learning rate) are unusable."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    sandwich_random: int = 2
    distill: bool = False
    distill_start: int = 0  # steps in which the students learn from the labels alone
    distill_weight: float = 1.0  # then: (1 - w) x labels + w x the largest's soft predictions
    random_weight: float = 0.5  # the random students' mean loss counts this much (the largest's and smallest's: 1)
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    max_bad_steps: int = 5  # consecutive non-finite steps before aborting
    teacher: str = "inplace"  # or "pretrained": a frozen copy of the largest arch after `teacher_steps`
    teacher_steps: int = 0  # steps in which the largest arch alone learns (before the frozen copy is taken)


@dataclass(frozen=True)
class TrainResult:
    step: int  # steps done in total, across resumes
    trained_now: int
    skipped_steps: int
    seconds: float
    record: dict[str, Any] | None  # the last checkpoint's record


def random_quantization(arch: Arch, space, rng: np.random.Generator) -> Arch:
    layers = tuple(LayerArch(layer.num_heads, layer.mlp_dim, layer.attention,
                             int(space.layers[i].bits[rng.integers(len(space.layers[i].bits))]))
                   for i, layer in enumerate(arch.layers))
    return Arch(arch.embed_dim, layers)


def distill_weight(settings: TrainSettings, step: int) -> float:
    """The weight of the teacher's soft predictions in a student's loss at `step` (the rest is the
    labels'): none before `distill_start`, since a teacher that has not learned yet teaches noise."""
    if not (settings.distill or settings.teacher == "pretrained") or step < settings.distill_start:
        return 0.0
    return settings.distill_weight


def sandwich_loss(model: Supernet, x: torch.Tensor, y: torch.Tensor, largest: Arch, students: list[Arch],
                  settings: TrainSettings, step: int, teacher: torch.nn.Module | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's loss: the largest on the labels, plus each student on the labels and (from
    `distill_start`) the largest's soft predictions. `students[0]` is the smallest and counts as much
    as the largest; the random students after it count `random_weight` together (their mean), because
    random archs pull the shared weights away from the largest's (local attention's gradient points
    against softmax attention's) and a sum over them would outweigh the two archs the sandwich bounds.
    With a frozen `teacher` (a pretrained model), its soft predictions are the targets, and the largest
    learns from them as the students do. Returns the loss and the logits of the largest and of the
    smallest."""
    teacher_logits = model(x, largest)
    weight = distill_weight(settings, step)
    if teacher is None:
        loss = F.cross_entropy(teacher_logits, y)
        soft_targets = teacher_logits.detach().softmax(dim=-1)
    else:
        with torch.no_grad():
            soft_targets = teacher(x).softmax(dim=-1)
        loss = (1.0 - weight) * F.cross_entropy(teacher_logits, y) + weight * F.kl_div(
            teacher_logits.log_softmax(dim=-1), soft_targets, reduction="batchmean")
    random_scale = settings.random_weight / max(1, len(students) - 1)
    small_logits = None
    for index, arch in enumerate(students):
        logits = model(x, arch)
        small_logits = logits if small_logits is None else small_logits
        scale = 1.0 if index == 0 else random_scale
        if weight < 1.0:
            loss = loss + scale * (1.0 - weight) * F.cross_entropy(logits, y)
        if weight > 0.0:
            loss = loss + scale * weight * F.kl_div(logits.log_softmax(dim=-1), soft_targets, reduction="batchmean")
    return loss, teacher_logits, small_logits


def _schedule(settings: TrainSettings):
    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train_supernet(model: Supernet, task: Task, settings: TrainSettings, seed: int,
                   checkpoint: str | Path | None = None, task_options: dict | None = None,
                   progress: bool = True) -> TrainResult:
    """Train (or continue training) `model` to `settings.steps` steps."""
    space = model.space
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    batches = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    step, skipped, record = 0, 0, None
    checkpoint = Path(checkpoint) if checkpoint is not None else None

    teacher = None
    if checkpoint is not None and checkpoint.exists():
        state, record = load_checkpoint(checkpoint, space, task.name)
        check_layout(checkpoint, record, task)
        if record.get("seed") != seed:
            raise CheckpointError(f"checkpoint {checkpoint}: trained with seed {record.get('seed')}, not {seed}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.set_state(state["batch_rng"])
        rng.bit_generator.state = json.loads(state["arch_rng"])
        step, skipped = int(state["step"]), int(state["skipped_steps"])
        if "teacher" in state:
            teacher = _frozen(model.extract(space.largest()))
            teacher.load_state_dict(state["teacher"])
        # the config's lr and budget win over the saved schedule, so a changed config takes effect
        scheduler.base_lrs = [settings.lr for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["initial_lr"] = settings.lr
            group["lr"] = settings.lr * _schedule(settings)(step)
        log.info("resuming supernet training from step %d (%s)", step, checkpoint)

    def save() -> dict[str, Any] | None:
        if checkpoint is None:
            return None
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingDiverged(f"weights became non-finite by step {step}; checkpoint {checkpoint} not "
                                   f"overwritten (lower supernet.lr)")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "step": step, "skipped_steps": skipped,
                 "batch_rng": batches.get_state(), "arch_rng": json.dumps(rng.bit_generator.state)}
        if teacher is not None:
            state["teacher"] = teacher.state_dict()
        metadata = {"space_name": space.name, "space_hash": space.hash, "space": space.to_dict(),
                    "task": task.name, "task_options": task_options or {}, "task_spec": task.spec.to_dict(),
                    "labels": task.labels, "steps": step, "seed": seed}
        return save_checkpoint(checkpoint, state, metadata)

    x_train, y_train = task.split("train")
    largest, smallest = space.largest(), space.smallest()
    start, started = step, time.perf_counter()
    bad_in_a_row = 0
    model.train()
    bar = tqdm(total=settings.steps, initial=step, disable=not progress, desc="supernet", unit="step",
               dynamic_ncols=True)
    try:
        while step < settings.steps:
            index = torch.randint(len(y_train), (settings.batch_size,), generator=batches)
            x, y = x_train[index], y_train[index]
            optimizer.zero_grad(set_to_none=True)
            if settings.teacher == "pretrained" and step < settings.teacher_steps:  # the teacher learns alone
                teacher_logits = small_logits = model(x, largest)
                loss = F.cross_entropy(teacher_logits, y)
            else:
                if settings.teacher == "pretrained" and teacher is None:
                    teacher = _frozen(model.extract(largest))
                students = [random_quantization(smallest, space, rng)]
                students += [space.sample(rng) for _ in range(settings.sandwich_random)]
                loss, teacher_logits, small_logits = sandwich_loss(model, x, y, largest, students, settings, step,
                                                                   teacher)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                finite = bool(torch.isfinite(grad_norm))
            if not finite:
                skipped += 1
                bad_in_a_row += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss or gradient; step skipped", step)
                if bad_in_a_row >= settings.max_bad_steps:
                    raise TrainingDiverged(
                        f"training diverged: loss or gradient non-finite for {bad_in_a_row} steps in a row at step "
                        f"{step} (supernet.lr {settings.lr:g} too high?); no checkpoint written since")
            else:
                bad_in_a_row = 0
                optimizer.step()
            with warnings.catch_warnings():  # a skipped step still advances the schedule
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == settings.steps:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                acc_large=f"{(teacher_logits.argmax(-1) == y).float().mean().item():.2f}",
                                acc_small=f"{(small_logits.argmax(-1) == y).float().mean().item():.2f}")
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                record = save()
    except KeyboardInterrupt:
        if step > start:
            record = save()  # keep the work done; the run continues from here next time
        raise
    finally:
        bar.close()
    return TrainResult(step=step, trained_now=step - start, skipped_steps=skipped,
                       seconds=time.perf_counter() - started, record=record)


def check_layout(path: str | Path, record: dict[str, Any], task: Task) -> None:
    """A checkpoint must be of this task's inputs, model layout and labels (an imported model's)."""
    stored = record.get("task_spec")
    if isinstance(stored, dict) and "style" in stored and stored != task.spec.to_dict():
        raise CheckpointError(f"checkpoint {path}: trained for inputs and a model layout other than this task's "
                              f"(another pretrained model, sequence length or number of classes)")
    if "labels" in record and record["labels"] != task.labels:
        raise CheckpointError(f"checkpoint {path}: trained on labels {str(record['labels'])[:80]}, not this "
                              f"task's {str(task.labels)[:80]}")


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def load_supernet(path: str | Path, space, task: Task, expected_sha256: str | None = None) -> Supernet:
    """The trained supernet of a checkpoint, after its hash, space and task are checked."""
    state, record = load_checkpoint(path, space, task.name, expected_sha256)
    check_layout(path, record, task)
    model = Supernet(space, task.spec)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit this model ({str(exc).splitlines()[0]})") \
            from None
    return model.eval()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, arch: Arch | None, task: Task, split: str = "val",
             batch_size: int = 512) -> float:
    """Accuracy of `arch` with inherited weights (or of a static model when arch is None)."""
    x, y = task.split(split)
    was_training = model.training
    model.eval()
    correct = 0
    for begin in range(0, len(y), batch_size):
        xb = x[begin:begin + batch_size]
        logits = model(xb) if arch is None else model(xb, arch)
        correct += int((logits.argmax(dim=-1) == y[begin:begin + batch_size]).sum())
    model.train(was_training)
    return correct / len(y)


def train_standalone(model: torch.nn.Module, task: Task, settings: TrainSettings, seed: int,
                     progress: bool = False) -> TrainResult:
    """Train one static model alone (cross-entropy, same optimizer and schedule as
    the supernet): the baseline that inherited weights are compared with, and
    the fine-tuning of an extracted subnet."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    batches = torch.Generator().manual_seed(seed)
    x_train, y_train = task.split("train")
    started, skipped = time.perf_counter(), 0
    model.train()
    for _ in tqdm(range(settings.steps), disable=not progress, desc="standalone", unit="step"):
        index = torch.randint(len(y_train), (settings.batch_size,), generator=batches)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_train[index]), y_train[index])
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
        else:
            skipped += 1
        scheduler.step()
    return TrainResult(step=settings.steps, trained_now=settings.steps, skipped_steps=skipped,
                       seconds=time.perf_counter() - started, record=None)
