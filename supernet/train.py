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
from supernet.device import MixedPrecision, to_cpu
from supernet.model import Supernet
from supernet.multi_arch import forward_parts
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
    learns from them as the students do. With a head per depth, the largest's pass also gives the widest
    arch of every shallower depth (its first k layers), which learn as students too, their mean loss
    counting `exit_weight`. With `archs_per_pass` k > 1, the students go k at a time
    through one pass, each on its k-th part of the batch (`multi_arch`). Returns the loss, the
    largest's logits and the smallest's accuracy on the samples it saw."""
    *exits, (_, teacher_logits) = model.exit_logits(x, largest)
    weight = distill_weight(settings, step)
    if teacher is None:
        loss = F.cross_entropy(teacher_logits, y)
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
        else:  # the batch in equal parts, one per arch (a remainder of under len(group) samples sits out)
            part = len(y) // len(group)
            logits = forward_parts(model, x[:part * len(group)], group)
            parts = [(logits[i * part:(i + 1) * part], slice(i * part, (i + 1) * part)) for i in range(len(group))]
        for offset, (logits, rows) in enumerate(parts):
            scale = 1.0 if first + offset == 0 else random_scale
            if small_accuracy is None:
                small_accuracy = (logits.detach().argmax(-1) == y[rows]).float().mean()
            loss = loss + scale * _student_loss(logits, y[rows], soft_targets[rows], weight)
    return loss, teacher_logits, small_accuracy


def _student_loss(logits: torch.Tensor, labels: torch.Tensor, soft_targets: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """(1 - weight) x cross-entropy on the labels + weight x KL divergence to the soft targets; a term
    of weight 0 is not computed."""
    loss = logits.new_zeros(())
    if weight < 1.0:
        loss = loss + (1.0 - weight) * F.cross_entropy(logits, labels)
    if weight > 0.0:
        loss = loss + weight * F.kl_div(logits.log_softmax(dim=-1), soft_targets, reduction="batchmean")
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
            return F.cross_entropy(logits, y), logits, (logits.detach().argmax(-1) == y).float().mean()
        return sandwich_loss(self.supernet, x, y, largest, students, self.settings, step, teacher)


class World:
    """The processes that train one supernet together: by default this one alone. Each takes its
    shard of every batch; `prepare` wraps the step for gradient reduction (DDP), `all_true` makes
    every process take the same decision, `report` tells the engine of progress. Rank 0 writes
    the checkpoints."""

    rank, size = 0, 1

    def prepare(self, step: SandwichStep) -> torch.nn.Module:
        return step

    def activation_ranges(self):
        """The context in which fake quantization takes the whole batch's activation ranges."""
        return contextlib.nullcontext()

    def all_true(self, flag: bool) -> bool:
        return flag

    def report(self, step: int, loss: float) -> None:
        pass


def lr_phases(settings: TrainSettings) -> list[tuple[int, int]]:
    """The (start, end) steps of each warm-up + cosine cycle: one over the budget, or, with a pretrained
    teacher, one for its own fine-tuning and one for the rest. The teacher's copy is frozen where its
    learning rate has decayed: taken in the middle of one long decay, it taught from unsettled weights
    (the package example's teacher: 69.1% val, below the 72.9% the largest arch reached under it)."""
    if settings.teacher == "pretrained" and 0 < settings.teacher_steps < settings.steps:
        return [(0, settings.teacher_steps), (settings.teacher_steps, settings.steps)]
    return [(0, settings.steps)]


def lr_schedule(settings: TrainSettings):
    """Step -> the learning rate's factor: in each phase, a linear warm-up then a cosine decay to zero."""
    phases = lr_phases(settings)

    def factor(step: int) -> float:
        start, end = next(((s, e) for s, e in phases if step < e), phases[-1])
        local, warmup = step - start, min(settings.warmup_steps, end - start - 1)
        if local < warmup:
            return (local + 1) / warmup
        progress = (local - warmup) / max(1, end - start - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train_supernet(model: Supernet, task: Task, settings: TrainSettings, seed: int,
                   checkpoint: str | Path | None = None, task_options: dict | None = None,
                   progress: bool = True, device: torch.device | str = "cpu", world: World | None = None
                   ) -> TrainResult:
    """Train (or continue training) `model` to `settings.steps` steps on `device`. With a `world`
    of several processes, each computes the same archs on its shard of every batch (the batch's
    indices are drawn alike everywhere, so the result does not depend on the number of processes)."""
    world = world or World()
    if settings.batch_size % world.size:
        raise InputError(f"batch size {settings.batch_size} does not split evenly over {world.size} workers")
    device = torch.device(device)
    precision = MixedPrecision(device)
    space = model.space
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(settings))
    batches = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    step, skipped, record = 0, 0, None
    checkpoint = Path(checkpoint) if checkpoint is not None else None

    teacher = None
    if checkpoint is not None and checkpoint.exists():
        state, record = load_resumable(checkpoint, space, task, seed)
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
            group["lr"] = settings.lr * lr_schedule(settings)(step)
        log.info("resuming supernet training from step %d (%s)", step, checkpoint)

    def save() -> dict[str, Any] | None:
        if checkpoint is None or world.rank != 0:
            return None
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingDiverged(f"weights became non-finite by step {step}; checkpoint {checkpoint} not "
                                   f"overwritten (lower supernet.lr)")
        state = {"model": to_cpu(model.state_dict()), "optimizer": to_cpu(optimizer.state_dict()),
                 "scheduler": scheduler.state_dict(), "step": step, "skipped_steps": skipped,
                 "batch_rng": batches.get_state(), "arch_rng": json.dumps(rng.bit_generator.state)}
        if teacher is not None:
            state["teacher"] = to_cpu(teacher.state_dict())
        metadata = {"space_name": space.name, "space_hash": space.hash, "space": space.to_dict(),
                    "task": task.name, "task_options": task_options or {}, "task_spec": task.spec.to_dict(),
                    "labels": task.labels, "steps": step, "seed": seed}
        return save_checkpoint(checkpoint, state, metadata)

    x_train, y_train = (tensor.to(device) for tensor in task.split("train"))
    largest, smallest = space.largest(), space.smallest()
    forward = world.prepare(SandwichStep(model, settings))
    start, started = step, time.perf_counter()
    bad_in_a_row = 0
    model.train()
    bar = tqdm(total=settings.steps, initial=step, disable=not progress or world.rank != 0, desc="supernet",
               unit="step", dynamic_ncols=True)
    scope = contextlib.ExitStack()
    scope.enter_context(world.activation_ranges())
    try:
        while step < settings.steps:
            index = torch.randint(len(y_train), (settings.batch_size,), generator=batches)
            index = index.tensor_split(world.size)[world.rank].to(device)
            x, y = x_train[index], y_train[index]
            optimizer.zero_grad(set_to_none=True)
            students: list[Arch] = []
            if not (settings.teacher == "pretrained" and step < settings.teacher_steps):  # else it learns alone
                if settings.teacher == "pretrained" and teacher is None:
                    teacher = _frozen(model.extract(largest))
                students = [random_quantization(smallest, space, rng)]
                students += [space.sample(rng) for _ in range(settings.sandwich_random)]
            with precision.autocast():
                loss, teacher_logits, small_accuracy = forward(x, y, largest, students, step, teacher)
            # backward even on a non-finite loss: every process must join the gradient reduction, and
            # the non-finite gradient then makes each of them skip the step alike
            precision.backward(loss)
            precision.unscale(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            finite = bool(torch.isfinite(loss)) and (precision.scales_loss or bool(torch.isfinite(grad_norm)))
            if not world.all_true(finite):
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
                precision.step(optimizer)
            with warnings.catch_warnings():  # a skipped step still advances the schedule
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            step += 1
            bar.update(1)
            if step % 10 == 0 or step == settings.steps:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                acc_large=f"{(teacher_logits.argmax(-1) == y).float().mean().item():.2f}",
                                acc_small=f"{small_accuracy.item():.2f}")
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                record = save()
                world.report(step, float(loss.detach()))
    except KeyboardInterrupt:
        if step > start:
            record = save()  # keep the work done; the run continues from here next time
        raise
    finally:
        scope.close()
        bar.close()
    return TrainResult(step=step, trained_now=step - start, skipped_steps=skipped,
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
    """Accuracy of `arch` with inherited weights (or of a static model when arch is None), on the
    model's device, in float32."""
    x, y = task.split(split)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    for begin in range(0, len(y), batch_size):
        xb = x[begin:begin + batch_size].to(device)
        logits = model(xb) if arch is None else model(xb, arch)
        correct += int((logits.argmax(dim=-1).cpu() == y[begin:begin + batch_size]).sum())
    model.train(was_training)
    return correct / len(y)


def train_standalone(model: torch.nn.Module, task: Task, settings: TrainSettings, seed: int,
                     progress: bool = False, device: torch.device | str = "cpu") -> TrainResult:
    """Train one static model alone (cross-entropy, same optimizer and schedule as
    the supernet): the baseline that inherited weights are compared with, and
    the fine-tuning of an extracted subnet."""
    device = torch.device(device)
    precision = MixedPrecision(device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(settings))
    batches = torch.Generator().manual_seed(seed)
    x_train, y_train = (tensor.to(device) for tensor in task.split("train"))
    started, skipped = time.perf_counter(), 0
    model.train()
    for _ in tqdm(range(settings.steps), disable=not progress, desc="standalone", unit="step"):
        index = torch.randint(len(y_train), (settings.batch_size,), generator=batches).to(device)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
        if torch.isfinite(loss):
            precision.backward(loss)
            precision.unscale(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            precision.step(optimizer)
        else:
            skipped += 1
        scheduler.step()
    return TrainResult(step=settings.steps, trained_now=settings.steps, skipped_steps=skipped,
                       seconds=time.perf_counter() - started, record=None)
