"""The one training loop that the supernet, a model trained alone and a fine-tuned subnet share.

AdamW, a learning-rate factor per step (`warmup_cosine`), gradient clipping, mixed precision on a GPU,
and seeded batches. A non-finite loss or gradient skips the step (every process of a `World` alike);
`max_bad_steps` in a row abort with `TrainingDiverged`, and a state is never taken of non-finite
weights. `state()` and `restore()` carry everything a continued run needs (tensors and numbers only,
loadable with weights_only), so a run continued from a state trains exactly what an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from search_space import InputError
from supernet.device import MixedPrecision, to_cpu

log = logging.getLogger("elastiq.supernet")


class TrainingDiverged(InputError):
    """The loss stayed non-finite: the settings (usually the learning rate) are unusable."""


class World:
    """The processes that train one model together: by default this one alone. Each takes its
    shard of every batch; `prepare` wraps the step for gradient reduction (DDP), `all_true` makes
    every process take the same decision, `report` tells the engine of progress. Rank 0 writes
    the checkpoints."""

    rank, size = 0, 1

    def prepare(self, step: torch.nn.Module) -> torch.nn.Module:
        return step

    def activation_ranges(self):
        """The context in which fake quantization takes the whole batch's activation ranges."""
        return contextlib.nullcontext()

    def all_true(self, flag: bool) -> bool:
        return flag

    def report(self, step: int, loss: float) -> None:
        pass


def warmup_cosine(phases: list[tuple[int, int]], warmup_steps: int) -> Callable[[int], float]:
    """Step -> the learning rate's factor: in each (start, end) phase, a linear warm-up of `warmup_steps`
    (at most one step less than the phase) then a cosine decay to zero."""
    def factor(step: int) -> float:
        start, end = next(((s, e) for s, e in phases if step < e), phases[-1])
        local, warmup = step - start, min(warmup_steps, end - start - 1)
        if local < warmup:
            return (local + 1) / warmup
        progress = (local - warmup) / max(1, end - start - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class TrainingLoop:
    """Trains `model` on the task's training split, one `step(loss_of)` at a time: `loss_of(x, y)` gives
    the batch's loss (and whatever else the caller wants back)."""

    def __init__(self, model: torch.nn.Module, train: tuple[torch.Tensor, torch.Tensor], batch_size: int,
                 lr: float, weight_decay: float, grad_clip: float, schedule: Callable[[int], float], seed: int,
                 device: torch.device | str = "cpu", world: World | None = None, max_bad_steps: int = 5,
                 what: str = "training", lr_setting: str = "the learning rate"):
        self.world = world or World()
        if batch_size % self.world.size:
            raise InputError(f"batch size {batch_size} does not split evenly over {self.world.size} workers")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.precision = MixedPrecision(self.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.schedule = schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.batches = torch.Generator().manual_seed(seed)
        self.x_train, self.y_train = (tensor.to(self.device) for tensor in train)
        self.batch_size, self.grad_clip, self.max_bad_steps = batch_size, grad_clip, max_bad_steps
        self.what, self.lr_setting = what, lr_setting  # for the messages
        self.step_count, self.skipped, self.bad_in_a_row = 0, 0, 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch, drawn alike in every process of the world; this process's shard of it."""
        index = torch.randint(len(self.y_train), (self.batch_size,), generator=self.batches)
        index = index.tensor_split(self.world.size)[self.world.rank].to(self.device)
        return self.x_train[index], self.y_train[index]

    def step(self, loss_of: Callable[[torch.Tensor, torch.Tensor], Any], x=None, y=None) -> Any:
        """One optimizer step on the next batch (or on `x`, `y`); returns what `loss_of` returned, whose
        first element (or itself) is the loss."""
        if x is None:
            x, y = self.next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            out = loss_of(x, y)
        loss = out[0] if isinstance(out, tuple) else out
        # backward even on a non-finite loss: every process must join the gradient reduction, and
        # the non-finite gradient then makes each of them skip the step alike
        self.precision.backward(loss)
        self.precision.unscale(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        finite = bool(torch.isfinite(loss)) and (self.precision.scales_loss or bool(torch.isfinite(grad_norm)))
        if not self.world.all_true(finite):
            self.skipped += 1
            self.bad_in_a_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("step %d: non-finite loss or gradient; step skipped", self.step_count)
            if self.bad_in_a_row >= self.max_bad_steps:
                raise TrainingDiverged(
                    f"{self.what} diverged: loss or gradient non-finite for {self.bad_in_a_row} steps in a row at "
                    f"step {self.step_count} ({self.lr_setting} {self.optimizer.defaults['lr']:g} too high?); no "
                    f"checkpoint written since")
        else:
            self.bad_in_a_row = 0
            self.precision.step(self.optimizer)
        with warnings.catch_warnings():  # a skipped step still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.step_count += 1
        return out

    def set_lr(self, lr: float) -> None:
        """A new base learning rate, on the same schedule from the current step (a changed config wins over
        a restored state)."""
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * self.schedule(self.step_count)

    def state(self) -> dict[str, Any]:
        """Everything a continued run needs, on the CPU; refused if the weights became non-finite. On the CPU
        its tensors are the live ones (no copy of the weights and moments is made): save it before the next
        step."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingDiverged(f"{self.what}: weights became non-finite by step {self.step_count}; nothing "
                                   f"saved (lower {self.lr_setting})")
        return {"model": to_cpu(self.model.state_dict()), "optimizer": to_cpu(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(), "batch_rng": self.batches.get_state(),
                "step": self.step_count, "skipped_steps": self.skipped}

    def restore(self, state: dict[str, Any]) -> None:
        # fine-tuning checkpoints written before this loop name three keys otherwise
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"] if "scheduler" in state else state["schedule"])
        self.batches.set_state(state["batch_rng"] if "batch_rng" in state else state["batches"])
        self.step_count = int(state["step"])
        self.skipped = int(state["skipped_steps"] if "skipped_steps" in state else state["skipped"])
