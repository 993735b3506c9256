"""The stages after the supernet: the search (its objectives' metrics and constraints), fine-tuning, export."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from orchestrator.config.base import Section
from supernet.training.finetune import FinetuneSettings

# accuracy, or a language model's perplexity, is a task's quality (`supernet.tasks.quality_metric`); memory_mb is
# a model's weights and its KV cache at the target's batch and context (a decoder's; an encoder's weights alone)
METRICS = ("accuracy", "perplexity", "latency_ms", "params", "bytes", "macs", "memory_mb")
STRATEGIES = ("evolutionary", "nsga2", "tpe", "random")
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class SearchConfig(Section):
    strategy: Literal[STRATEGIES] = "evolutionary"
    evaluations: int = Field(100, gt=0, le=10**7)
    batch_size: int = Field(8, gt=0, le=100_000)
    finetune_steps: int = Field(0, ge=0, le=10**7)
    measure_latency: bool = False  # measure every evaluated arch (else the predictor's latency is used)
    executor: Literal["ray", "local"] = "ray"  # local: in-process, for tests and debugging
    # the strategy's random choices (default: the study's seed, which also fixed the supernet's
    # data split and so cannot change without retraining)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class FinetuneConfig(Section):
    """`elastiq finetune`: the front's candidates trained as Ray Tune trials, stopped early by a scheduler."""

    steps: int = Field(600, gt=0, le=10**7)  # the full budget of each candidate
    rungs: int = Field(6, ge=2, le=1000)  # validation results per candidate (the scheduler decides at each)
    batch_size: int = Field(FinetuneSettings.batch_size, gt=0, le=2**20)
    lr: float = Field(FinetuneSettings.lr, gt=0, le=1, allow_inf_nan=False)
    weight_decay: float = Field(FinetuneSettings.weight_decay, ge=0, le=100, allow_inf_nan=False)
    # none: labels alone; largest: the supernet's largest arch's soft predictions; teacher: the frozen pretrained
    # teacher that trained the supernet (supernet.teacher pretrained)
    distill: Literal["none", "largest", "teacher"] = "largest"
    distill_weight: float = Field(FinetuneSettings.distill_weight, ge=0, le=1, allow_inf_nan=False)
    # full: every candidate trains the whole budget; asha: Ray Tune's ASHA on the front margin; lc: stop a
    # candidate once its extrapolated learning curve is confidently dominated
    scheduler: Literal["full", "asha", "lc"] = "asha"
    # candidates: the feasible front, and archs whose accuracy this much higher would put them on it
    margin: float = Field(0.01, ge=0, le=1, allow_inf_nan=False)
    max_candidates: int = Field(24, gt=0, le=10_000)
    reduction_factor: int = Field(3, ge=2, le=100)  # asha: one in this many goes on at each rung
    grace_rungs: int = Field(1, ge=1, le=1000)  # rungs every candidate trains before a scheduler may stop it
    confidence: float = Field(0.95, gt=0.5, lt=1, allow_inf_nan=False)  # lc: how sure a stop must be
    # lc: a candidate that ends no more than this above the best cheaper one is not worth its cost (0: dominated)
    min_gain: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    # lc: what extrapolates a curve: pfn, the learning-curve PFN (predictors.curve_pfn); families, three
    # parametric families fitted by least squares (predictors.learning_curve)
    curve_model: Literal["pfn", "families"] = "pfn"
    curve_model_weights: str | None = Field(None, min_length=1)  # pfn: a folder of weights (default: shipped)
    directory: str | None = Field(None, min_length=1)  # fine-tuned weights (default: beside the supernet's)

    @model_validator(mode="after")
    def _rungs_within_the_budget(self) -> FinetuneConfig:
        if self.rungs > self.steps:
            raise ValueError(f"finetune.rungs {self.rungs} is more than finetune.steps {self.steps} (a rung is at "
                             f"least one step)")
        if self.grace_rungs >= self.rungs and self.scheduler != "full":
            raise ValueError(f"finetune.grace_rungs {self.grace_rungs} leaves the scheduler no rung to stop at "
                             f"(finetune.rungs {self.rungs})")
        return self

    def to_settings(self) -> FinetuneSettings:
        """The training's settings (`distill` none trains on the labels alone)."""
        return FinetuneSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                                weight_decay=self.weight_decay,
                                distill_weight=0.0 if self.distill == "none" else self.distill_weight)


class ExportConfig(Section):
    """`elastiq export`: which of the front's archs a user receives."""

    # archs whose evaluated accuracy is at or below this are left off the front: "majority" (the share of the
    # validation split's most common label: what always guessing it scores), a fraction, or "none"
    accuracy_floor: Literal["majority", "none"] | float = "majority"
    # an arch stays on the exported front unless another is as good in every other objective and more accurate
    # by more than this: 0 (the strict Pareto front), a fraction, or "standard-error" (of the arch's accuracy on
    # the validation split, sqrt(p(1 - p) / n): a lead the split cannot tell from chance; a larger front)
    front_tolerance: Literal["standard-error"] | float = 0.0

    @field_validator("accuracy_floor", "front_tolerance")
    @classmethod
    def _a_fraction(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            words = "'majority' or 'none'" if info.field_name == "accuracy_floor" else "'standard-error'"
            raise ValueError(f"{value!r}: give a fraction in [0, 1) or {words}")
        return value


class Constraint(Section):
    metric: str
    op: Literal["<=", ">="]
    bound: float

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraints(value: Any) -> list[dict[str, Any]]:
    """`['latency_ms <= 5', ...]` -> the fields of each `Constraint`."""
    if not isinstance(value, list):
        raise ValueError("expected a list such as ['latency_ms <= 5', 'params <= 1e6']")
    parsed = []
    for text in value:
        match = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r} is not of the form 'metric <= number' or 'metric >= number'")
        metric, op, bound = match.groups()
        if metric not in METRICS:
            raise ValueError(f"constraint on unknown metric {metric!r}; choose from {list(METRICS)}")
        try:
            number = float(bound)
        except ValueError:
            raise ValueError(f"{text!r}: {bound!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r}: the bound must be a finite number")
        parsed.append({"metric": metric, "op": op, "bound": number})
    return parsed
