"""The task and the supernet's sections: what is learned, and how the supernet trains."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from orchestrator.config.base import Section
from supernet.training.train import TrainSettings


class TaskConfig(Section):
    name: str = "digits"  # a shipped task, or `module:function` for a user task
    options: dict[str, Any] = Field(default_factory=dict)


class SupernetConfig(Section):
    # a pretrained Hugging Face model (a save_pretrained directory, relative to the config) to start from
    pretrained: str | None = Field(None, min_length=1)
    importance: bool = True  # put the imported heads and MLP neurons in importance order before slicing
    calibration_samples: int = Field(256, gt=0, le=10**6)  # training inputs the importance is measured on
    # "inplace": students learn from the live largest arch (with `distill`); "pretrained": from the imported
    # model, fine-tuned alone for `teacher_steps` steps (its classifier is new where the checkpoint had none),
    # then frozen
    teacher: Literal["inplace", "pretrained"] = TrainSettings.teacher
    teacher_steps: int = Field(TrainSettings.teacher_steps, ge=0, le=10**9)
    steps: int = Field(TrainSettings.steps, gt=0, le=10**9)
    batch_size: int = Field(TrainSettings.batch_size, gt=0, le=2**20)
    lr: float = Field(TrainSettings.lr, gt=0, le=10)
    weight_decay: float = Field(TrainSettings.weight_decay, ge=0, le=100)
    warmup_steps: int = Field(TrainSettings.warmup_steps, ge=0, le=10**9)
    # random subnets per step besides largest and smallest
    sandwich_random: int = Field(TrainSettings.sandwich_random, ge=0, le=64)
    # the random subnets' mean loss counts this much; the largest's and the smallest's count 1 each
    random_weight: float = Field(TrainSettings.random_weight, ge=0, le=64, allow_inf_nan=False)
    # students that share one forward pass, each on its equal part of the batch (ViT-ResNAS's multi-architectural
    # sampling): fewer, larger kernel launches, fewer samples per student
    archs_per_pass: int = Field(TrainSettings.archs_per_pass, gt=0, le=64)
    # false: every student learns from the labels. In-place distillation through random
    # students pulled the largest arch down by 40 points on MNIST-1D (bench/supernet/supernet_recipe.py)
    distill: bool = TrainSettings.distill
    # the students learn from the labels alone for `distill_start` steps, then from
    # (1 - distill_weight) x labels + distill_weight x the largest arch's soft predictions
    distill_start: int = Field(TrainSettings.distill_start, ge=0, le=10**9)
    distill_weight: float = Field(TrainSettings.distill_weight, ge=0, le=1, allow_inf_nan=False)
    # with a head per depth (space.depth_heads): the largest arch's pass also gives the logits of its first
    # k layers, the full-width arch of each shallower depth k; their mean loss counts this much
    exit_weight: float = Field(TrainSettings.exit_weight, ge=0, le=64, allow_inf_nan=False)
    grad_clip: float = Field(TrainSettings.grad_clip, gt=0, allow_inf_nan=False)
    checkpoint: str = Field("elastiq-supernet.pt", min_length=1)
    checkpoint_every: int = Field(TrainSettings.checkpoint_every, gt=0, le=10**9)
    # where training, evaluation and fine-tuning compute: auto picks CUDA when a GPU is visible (mixed
    # precision there: bf16 where supported, else fp16 with a gradient scaler)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # 1: train in this process; more: a Ray Train group (DDP) of that many workers, each taking its shard of
    # every batch (with ray.cpus_per_worker CPUs, or a GPU each on cuda), on the Ray of `ray.address`
    workers: int = Field(1, gt=0, le=100_000)

    @model_validator(mode="after")
    def _distillation_within_the_budget(self) -> SupernetConfig:
        if self.distill_start > self.steps:
            raise ValueError(f"supernet.distill_start {self.distill_start} is beyond the budget "
                             f"(supernet.steps {self.steps})")
        if self.teacher == "pretrained" and self.pretrained is None:
            raise ValueError("supernet.teacher 'pretrained' needs supernet.pretrained")
        if self.batch_size % self.workers:
            raise ValueError(f"supernet.batch_size {self.batch_size} does not split evenly over supernet.workers "
                             f"{self.workers} (each worker takes an equal shard of every batch)")
        if self.batch_size // self.workers < self.archs_per_pass:
            raise ValueError(f"supernet.archs_per_pass {self.archs_per_pass} needs a sample per arch: each worker's "
                             f"batch holds {self.batch_size // self.workers}")
        if self.teacher_steps >= self.steps:
            raise ValueError(f"supernet.teacher_steps {self.teacher_steps} leaves no step of the budget "
                             f"(supernet.steps {self.steps}) for the supernet")
        return self

    def to_train_settings(self) -> TrainSettings:
        return TrainSettings(**self.model_dump(exclude=NON_TRAINING_KEYS))


# the supernet section's keys that are not the training's settings
NON_TRAINING_KEYS = {"checkpoint", "pretrained", "importance", "calibration_samples", "device", "workers"}


