"""Supernet training: the sandwich rule, resumable.

Each step trains the largest arch, the smallest and `sandwich_random` random
archs on the labels; the random archs' mean loss counts `random_weight` (the
largest's and the smallest's count 1 each). In-place distillation (BigNAS,
Once-for-All) is an option: the students then learn from the largest's soft
predictions, mixed with the labels by `distill_weight` from step
`distill_start` on (it is off by default: through random students it pulled
the largest arch down by 40 points on MNIST-1D). Every arch but the largest
gets a random quantization policy. AdamW, linear warm-up then cosine decay (a
cycle of its own for a pretrained teacher's fine-tuning), gradient clipping. A
non-finite loss or gradient skips the step; too many in a row abort with a
clear message, and a checkpoint is never written with non-finite weights.

An imported supernet may learn from the pretrained model instead (`teacher`
"pretrained"): its largest arch is fine-tuned alone for `teacher_steps` steps
(a bare encoder's classifier is new), then a frozen copy of it teaches every
arch of the sandwich, the largest included; the copy is kept in the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from search_space import Arch
from supernet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from supernet.device import to_cpu
from supernet.model import Supernet
from supernet.tasks import Task
from supernet.training.loop import TrainingDiverged, TrainingLoop, World, warmup_cosine
from supernet.training.losses import distillation_loss, hits, label_loss, perplexity
from supernet.training.multi_arch import forward_parts

__all__ = ["TrainSettings", "TrainResult", "TrainingDiverged", "World", "train_supernet", "train_standalone",
           "evaluate", "load_supernet", "load_resumable", "lr_schedule", "lr_phases"]

log = logging.getLogger("elastiq.supernet")


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
    archs_per_pass: int = 1  # students that share one forward pass, each on its part of the batch
    exit_weight: float = 1.0  # with a head per depth: the shallower depths' exits of the largest, their mean loss
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
    layers = tuple(replace(layer, bits=int(space.layers[i].bits[rng.integers(len(space.layers[i].bits))]))
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
    learns from them as the students do. With a head per depth, the largest's pass also gives the widest
    arch of every shallower depth (its first k layers), which learn as students too, their mean loss
    counting `exit_weight`. With `archs_per_pass` k > 1, the students go k at a time
    through one pass, each on its k-th part of the batch (`multi_arch`). Returns the loss, the
    largest's logits and the smallest's accuracy on the samples it saw."""
    *exits, (_, teacher_logits) = model.exit_logits(x, largest)
    weight = distill_weight(settings, step)
    if teacher is None:
        loss = label_loss(teacher_logits, y)
        soft_targets = teacher_logits.detach().softmax(dim=-1)
    else:
        with torch.no_grad():
            soft_targets = teacher(x).softmax(dim=-1)
        loss = _student_loss(teacher_logits, y, soft_targets, weight)
    for _, logits in exits:  # a head per depth: the largest's first k layers are depth k's widest arch
        loss = loss + settings.exit_weight / len(exits) * _student_loss(logits, y, soft_targets, weight)
    random_scale = settings.random_weight / max(1, len(students) - 1)
    small_accuracy = None
    for first in range(0, len(students), settings.archs_per_pass):
        group = students[first:first + settings.archs_per_pass]
        if len(group) == 1:
            parts = [(model(x, group[0]), slice(None))]
        elif not model.space.padded_multi_arch or model.task.style.causal:  # joins between widths, merged tokens,
            # a decoder's blocks in their own order and its grouped heads (multi_arch): each arch its own pass
            part = len(y) // len(group)
            rows = [slice(i * part, (i + 1) * part) for i in range(len(group))]
            parts = [(model(x[r], arch), r) for arch, r in zip(group, rows, strict=True)]
        else:  # the batch in equal parts, one per arch (a remainder of under len(group) samples sits out)
            part = len(y) // len(group)
            logits = forward_parts(model, x[:part * len(group)], group)
            parts = [(logits[i * part:(i + 1) * part], slice(i * part, (i + 1) * part)) for i in range(len(group))]
        for offset, (logits, rows) in enumerate(parts):
            scale = 1.0 if first + offset == 0 else random_scale
            if small_accuracy is None:
                small_accuracy = hits(logits.detach(), y[rows]).mean()
            loss = loss + scale * _student_loss(logits, y[rows], soft_targets[rows], weight)
    return loss, teacher_logits, small_accuracy


def _student_loss(logits: torch.Tensor, labels: torch.Tensor, soft_targets: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """(1 - weight) x cross-entropy on the labels + weight x KL divergence to the soft targets; a term
    of weight 0 is not computed."""
    loss = logits.new_zeros(())
    if weight < 1.0:
        loss = loss + (1.0 - weight) * label_loss(logits, labels)
    if weight > 0.0:
        loss = loss + weight * distillation_loss(logits, soft_targets)
    return loss


class SandwichStep(torch.nn.Module):
    """A training step's forward as one module call (the sandwich runs several archs): what DDP
    wraps, since it reduces the gradients of one forward and one backward. Without students, the
    largest arch learns alone from the labels (a pretrained teacher's own fine-tuning)."""

    def __init__(self, supernet: Supernet, settings: TrainSettings):
        super().__init__()
        self.supernet, self.settings = supernet, settings

    def forward(self, x: torch.Tensor, y: torch.Tensor, largest: Arch, students: list[Arch], step: int,
                teacher: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not students:
            logits = self.supernet(x, largest)
            return label_loss(logits, y), logits, hits(logits.detach(), y).mean()
        return sandwich_loss(self.supernet, x, y, largest, students, self.settings, step, teacher)


def lr_phases(settings: TrainSettings) -> list[tuple[int, int]]:
    """The (start, end) steps of each warm-up + cosine cycle: one over the budget, or, with a pretrained
    teacher, one for its own fine-tuning and one for the rest. The teacher's copy is frozen where its
    learning rate has decayed: taken in the middle of one long decay, it taught from unsettled weights
    (the package example's teacher: 69.1% val, below the 72.9% the largest arch reached under it)."""
    if settings.teacher == "pretrained" and 0 < settings.teacher_steps < settings.steps:
        return [(0, settings.teacher_steps), (settings.teacher_steps, settings.steps)]
    return [(0, settings.steps)]


def lr_schedule(settings: TrainSettings) -> Callable[[int], float]:
    """Step -> the learning rate's factor: in each phase, a linear warm-up then a cosine decay to zero."""
    return warmup_cosine(lr_phases(settings), settings.warmup_steps)


def train_supernet(model: Supernet, task: Task, settings: TrainSettings, seed: int,
                   checkpoint: str | Path | None = None, task_options: dict | None = None,
                   progress: bool = True, device: torch.device | str = "cpu", world: World | None = None
                   ) -> TrainResult:
    """Train (or continue training) `model` to `settings.steps` steps on `device`. With a `world`
    of several processes, each computes the same archs on its shard of every batch (the batch's
    indices are drawn alike everywhere, so the result does not depend on the number of processes)."""
    world = world or World()
    space = model.space
    loop = TrainingLoop(model, task.split("train"), settings.batch_size, settings.lr, settings.weight_decay,
                        settings.grad_clip, lr_schedule(settings), seed, device, world, settings.max_bad_steps,
                        what="training", lr_setting="supernet.lr")
    rng = np.random.default_rng(seed)
    record, teacher = None, None
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state, record = load_resumable(checkpoint, space, task, seed)
        loop.restore(state)
        rng.bit_generator.state = json.loads(state["arch_rng"])
        if "teacher" in state:
            teacher = _frozen(model.extract(space.largest()))
            teacher.load_state_dict(state["teacher"])
        loop.set_lr(settings.lr)  # the config's lr and budget win over the saved schedule
        log.info("resuming supernet training from step %d (%s)", loop.step_count, checkpoint)

    def save() -> dict[str, Any] | None:
        if checkpoint is None or world.rank != 0:
            return None
        state = {**loop.state(), "arch_rng": json.dumps(rng.bit_generator.state)}
        if teacher is not None:
            state["teacher"] = to_cpu(teacher.state_dict())
        metadata = {"space_name": space.name, "space_hash": space.hash, "space": space.to_dict(),
                    "task": task.name, "task_options": task_options or {}, "task_spec": task.spec.to_dict(),
                    "labels": task.labels, "steps": loop.step_count, "seed": seed}
        return save_checkpoint(checkpoint, state, metadata)

    largest, smallest = space.largest(), space.smallest()
    forward = world.prepare(SandwichStep(model, settings))
    start, started = loop.step_count, time.perf_counter()
    model.train()
    bar = tqdm(total=settings.steps, initial=start, disable=not progress or world.rank != 0, desc="supernet",
               unit="step", dynamic_ncols=True)
    scope = contextlib.ExitStack()
    scope.enter_context(world.activation_ranges())
    try:
        while loop.step_count < settings.steps:
            step = loop.step_count
            x, y = loop.next_batch()
            students: list[Arch] = []
            if not (settings.teacher == "pretrained" and step < settings.teacher_steps):  # else it learns alone
                if settings.teacher == "pretrained" and teacher is None:
                    teacher = _frozen(model.extract(largest))
                students = [random_quantization(smallest, space, rng)]
                students += [space.sample(rng) for _ in range(settings.sandwich_random)]
            loss, teacher_logits, small_accuracy = loop.step(
                lambda x, y, s=students, k=step, t=teacher: forward(x, y, largest, s, k, t), x, y)
            bar.update(1)
            if loop.step_count % 10 == 0 or loop.step_count == settings.steps:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                acc_large=f"{hits(teacher_logits, y).mean().item():.2f}",
                                acc_small=f"{small_accuracy.item():.2f}")
            if loop.step_count % settings.checkpoint_every == 0 or loop.step_count == settings.steps:
                record = save()
                world.report(loop.step_count, float(loss.detach()))
    except KeyboardInterrupt:
        if loop.step_count > start:
            record = save()  # keep the work done; the run continues from here next time
        raise
    finally:
        scope.close()
        bar.close()
    return TrainResult(step=loop.step_count, trained_now=loop.step_count - start, skipped_steps=loop.skipped,
                       seconds=time.perf_counter() - started, record=record)


def load_resumable(path: Path, space, task: Task, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint that this space, task and seed may continue (its state and record), else an error."""
    state, record = load_checkpoint(path, space, task.name)
    check_layout(path, record, task)
    if record.get("seed") != seed:
        raise CheckpointError(f"checkpoint {path}: trained with seed {record.get('seed')}, not {seed}")
    return state, record


def check_layout(path: str | Path, record: dict[str, Any], task: Task) -> None:
    """A checkpoint must be of this task's inputs, model layout and labels (an imported model's)."""
    stored, current = record.get("task_spec"), task.spec.to_dict()
    if isinstance(stored, dict) and "patch_grid" not in stored:  # recorded before tasks named their patch grid
        current.pop("patch_grid", None)
    if isinstance(stored, dict) and "style" in stored and stored != current:
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
def evaluate(model, arch: Arch | None, task: Task, split: str = "val", batch_size: int = 512) -> float:
    """The task's metric (`task.metric`: accuracy, or a language model's perplexity per token) of `arch` with
    inherited weights (or of a static model when arch is None; or of any callable on a batch, such as a
    runtime's program), on the model's device, in float32. The batches are always the same: activations are
    quantized per batch, so the same batches give the same numbers."""
    x, y = task.split(split)
    weights = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = weights.device if weights is not None else torch.device("cpu")
    was_training = getattr(model, "training", False)
    _set_training(model, False)
    if task.metric == "perplexity":  # a sequence's logits are (tokens, vocabulary): fewer sequences a batch
        batch_size = max(1, batch_size // x.shape[1])
    correct, loss = 0, 0.0
    for begin in range(0, len(y), batch_size):
        xb = x[begin:begin + batch_size].to(device)
        logits = model(xb) if arch is None else model(xb, arch)
        labels = y[begin:begin + batch_size].to(logits.device)
        if task.metric == "perplexity":
            loss += float(label_loss(logits.float(), labels, reduction="sum"))
        else:
            correct += int(hits(logits, labels).sum())
    _set_training(model, was_training)
    return perplexity(loss, y.numel()) if task.metric == "perplexity" else correct / len(y)


def _set_training(model, mode: bool) -> None:
    if isinstance(model, torch.nn.Module):
        try:
            model.train(mode)
        except NotImplementedError:  # a torch.export program has no mode to switch
            pass


def train_standalone(model: torch.nn.Module, task: Task, settings: TrainSettings, seed: int,
                     progress: bool = False, device: torch.device | str = "cpu") -> TrainResult:
    """Train one static model alone (cross-entropy, same optimizer and schedule as the supernet): the
    baseline that inherited weights are compared with."""
    loop = TrainingLoop(model, task.split("train"), settings.batch_size, settings.lr, settings.weight_decay,
                        settings.grad_clip, lr_schedule(settings), seed, device, max_bad_steps=settings.max_bad_steps,
                        what="standalone training")
    started = time.perf_counter()
    model.train()
    for _ in tqdm(range(settings.steps), disable=not progress, desc="standalone", unit="step"):
        loop.step(lambda x, y: label_loss(model(x), y))
    return TrainResult(step=settings.steps, trained_now=settings.steps, skipped_steps=loop.skipped,
                       seconds=time.perf_counter() - started, record=None)
