"""Fine-tuning one extracted subnet, a rung at a time, resumable between rungs.

The student learns from the labels, mixed with a teacher's soft predictions
(the supernet's largest arch, or the pretrained teacher that trained the
supernet) by `distill_weight`. AdamW, cosine decay over the whole budget (a
candidate stopped early keeps the learning rate of where it stopped),
gradient clipping; a non-finite loss skips the step. The whole state (weights,
optimizer, schedule, the batch generator) goes into each rung's checkpoint, so
a candidate continued from one trains exactly what an uninterrupted one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from supernet.device import MixedPrecision, to_cpu
from supernet.tasks import Task


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int  # the full budget
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    distill_weight: float = 0.5  # of the teacher's soft predictions; the labels take the rest
    grad_clip: float = 1.0


class Finetuner:
    """Trains `model` (a static subnet) for `settings.steps` steps in chunks; `state()` and `restore()`
    carry everything a continued run needs."""

    def __init__(self, model: torch.nn.Module, task: Task, settings: FinetuneSettings, seed: int,
                 teacher: torch.nn.Module | None = None, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.teacher = None if teacher is None else teacher.to(self.device).eval()
        self.settings = settings
        self.precision = MixedPrecision(self.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        total = settings.steps
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total))))
        self.batches = torch.Generator().manual_seed(seed)
        self.x_train, self.y_train = (tensor.to(self.device) for tensor in task.split("train"))
        self.step = 0
        self.skipped = 0

    def train(self, steps: int) -> None:
        """`steps` more steps (never past the budget)."""
        self.model.train()
        for _ in range(min(steps, self.settings.steps - self.step)):
            index = torch.randint(len(self.y_train), (self.settings.batch_size,), generator=self.batches)
            x, y = self.x_train[index.to(self.device)], self.y_train[index.to(self.device)]
            self.optimizer.zero_grad(set_to_none=True)
            with self.precision.autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
                if self.teacher is not None and self.settings.distill_weight > 0:
                    with torch.no_grad():
                        soft = self.teacher(x).float().softmax(dim=-1)
                    weight = self.settings.distill_weight
                    loss = (1 - weight) * loss + weight * F.kl_div(logits.float().log_softmax(dim=-1), soft,
                                                                   reduction="batchmean")
            if torch.isfinite(loss):
                self.precision.backward(loss)
                self.precision.unscale(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
                self.precision.step(self.optimizer)
            else:
                self.skipped += 1
            self.schedule.step()
            self.step += 1
        self.model.eval()

    def state(self) -> dict[str, Any]:
        """Tensors and numbers only (loadable with weights_only), on the CPU."""
        return {"model": to_cpu(self.model.state_dict()), "optimizer": to_cpu(self.optimizer.state_dict()),
                "schedule": self.schedule.state_dict(), "batches": self.batches.get_state(),
                "step": self.step, "skipped": self.skipped}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.batches.set_state(state["batches"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])

