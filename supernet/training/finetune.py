"""Fine-tuning one extracted subnet, a rung at a time, resumable between rungs.

The student learns from the labels, mixed with a teacher's soft predictions
(the supernet's largest arch, or the pretrained teacher that trained the
supernet) by `distill_weight`, in the shared `TrainingLoop`: cosine decay over
the whole budget (a candidate stopped early keeps the learning rate of where it
stopped). The whole state (weights, optimizer, schedule, the batch generator)
goes into each rung's checkpoint, so a candidate continued from one trains
exactly what an uninterrupted one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from supernet.tasks import Task
from supernet.training.loop import TrainingLoop, warmup_cosine
from supernet.training.losses import distillation_loss, label_loss


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
        self.settings = settings
        self.loop = TrainingLoop(model, task.split("train"), settings.batch_size, settings.lr, settings.weight_decay,
                                 settings.grad_clip, warmup_cosine([(0, settings.steps)], 0), seed, device,
                                 what="fine-tuning", lr_setting="finetune.lr")
        self.model = self.loop.model
        self.teacher = None if teacher is None else teacher.to(self.loop.device).eval()

    @property
    def step(self) -> int:
        return self.loop.step_count

    def train(self, steps: int) -> None:
        """`steps` more steps (never past the budget)."""
        self.model.train()
        for _ in range(min(steps, self.settings.steps - self.step)):
            self.loop.step(self._loss)
        self.model.eval()

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        loss = label_loss(logits, y)
        if self.teacher is not None and self.settings.distill_weight > 0:
            with torch.no_grad():
                soft = self.teacher(x).float().softmax(dim=-1)
            weight = self.settings.distill_weight
            loss = (1 - weight) * loss + weight * distillation_loss(logits.float(), soft)
        return loss

    def state(self) -> dict[str, Any]:
        """Tensors and numbers only (loadable with weights_only), on the CPU."""
        return self.loop.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.loop.restore(state)
