"""The study config: one YAML file, parsed into typed, validated objects.

Unknown keys are errors. `space` may be inline or a path relative to the
config file. Overrides (from CLI flags) are dotted keys applied before
validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from predictors.measure import Protocol
from predictors.target import HardwareTarget
from search_space import InputError, SearchSpace
from search_space.yaml_input import read_yaml
from supernet.finetune import FinetuneSettings
from supernet.train import TrainSettings

METRICS = ("accuracy", "latency_ms", "params", "bytes", "macs")
STRATEGIES = ("evolutionary", "nsga2", "tpe", "random")
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class ConfigError(InputError):
    """Invalid study config."""


class _Section(BaseModel):
    """A config section. Where a section configures a runtime object (`TrainSettings`, `HardwareTarget`,
    `Protocol`, `FinetuneSettings`), that class holds the defaults, the section refers to them, and its
    `to_...()` builds the object: each setting is defined once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SEED = Field(0, ge=0, le=2**32 - 1)  # what numpy, torch and scikit-learn all accept


class TaskConfig(_Section):
    name: str = "digits"  # a shipped task, or `module:function` for a user task
    options: dict[str, Any] = Field(default_factory=dict)


class SupernetConfig(_Section):
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
    # students pulled the largest arch down by 40 points on MNIST-1D (bench/supernet_recipe.py)
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


class TargetConfig(_Section):
    name: str = Field(HardwareTarget.name, min_length=1, max_length=200)
    device: Literal["cpu", "cuda"] = HardwareTarget.device
    threads: int = Field(HardwareTarget.threads, gt=0, le=1024)
    batch_size: int = Field(HardwareTarget.batch_size, gt=0, le=2**20)
    seq_len: int | None = Field(HardwareTarget.seq_len, gt=0, le=2**20)  # None: the task's own length
    dtype: Literal["float32"] = HardwareTarget.dtype
    # None: onnxruntime on cpu, aotinductor on cuda
    runtime: str | None = Field(HardwareTarget.runtime, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _runtime_runs_here(self) -> TargetConfig:
        try:
            self.to_target()  # the target checks that its runtime runs on its device
        except InputError as exc:
            raise ValueError(str(exc).removeprefix("target.runtime ").removeprefix("target.runtime: ")) from None
        return self

    def to_target(self) -> HardwareTarget:
        return HardwareTarget(**self.model_dump())


class MeasureConfig(_Section):
    archs: int = Field(200, gt=0, le=100_000)  # size of the latency dataset for the target
    passes: int = Field(15, gt=0, le=10_000)  # rounds in which every arch runs a short burst, in a new order each
    max_repeats: int = Field(Protocol.max_repeats, gt=0, le=10**6)
    # spread within a run above which it is repeated, then flagged
    max_cv: float = Field(Protocol.max_cv, gt=0, le=10)
    max_pass_cv: float = Field(Protocol.max_pass_cv, gt=0, le=10)  # the same for the spread between passes

    def to_protocol(self) -> Protocol:
        return Protocol(max_repeats=self.max_repeats, max_cv=self.max_cv, max_pass_cv=self.max_pass_cv)


class SearchConfig(_Section):
    strategy: Literal[STRATEGIES] = "evolutionary"
    evaluations: int = Field(100, gt=0, le=10**7)
    batch_size: int = Field(8, gt=0, le=100_000)
    finetune_steps: int = Field(0, ge=0, le=10**7)
    measure_latency: bool = False  # measure every evaluated arch (else the predictor's latency is used)
    executor: Literal["ray", "local"] = "ray"  # local: in-process, for tests and debugging
    # the strategy's random choices (default: the study's seed, which also fixed the supernet's
    # data split and so cannot change without retraining)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class FinetuneConfig(_Section):
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


class ExportConfig(_Section):
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


class RayConfig(_Section):
    address: str | None = None  # None starts a local Ray; "auto" joins a running cluster
    workers: int = Field(2, gt=0, le=100_000)
    retries: int = Field(2, ge=0, le=1000)  # times a trial whose worker process dies is run again
    cpus_per_worker: int = Field(1, gt=0, le=1024)  # each evaluation worker's and training worker's (torch threads)
    # each evaluation worker's share of a GPU (fractions let several share one); it evaluates on the GPU it gets
    gpus_per_worker: float = Field(0.0, ge=0, le=64, allow_inf_nan=False)


class Constraint(_Section):
    metric: str
    op: Literal["<=", ">="]
    bound: float

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class StudyConfig(_Section):
    study: str = Field(min_length=1, max_length=200)  # the length of the name columns
    storage: str = "sqlite:///elastiq.db"
    seed: int = SEED
    task: TaskConfig = TaskConfig()
    space: SearchSpace
    supernet: SupernetConfig = SupernetConfig()
    target: TargetConfig = TargetConfig()
    measure: MeasureConfig = MeasureConfig()
    objectives: dict[str, Literal["maximize", "minimize"]] = Field(
        default_factory=lambda: {"accuracy": "maximize", "latency_ms": "minimize"})
    constraints: list[Constraint] = Field(default_factory=list)
    search: SearchConfig = SearchConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    export: ExportConfig = ExportConfig()
    ray: RayConfig = RayConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _bits_the_runtime_runs(self) -> StudyConfig:
        try:
            self.target.to_target().inference_runtime.require_bits(self.space.bit_widths)
        except InputError as exc:
            raise ValueError(f"space.bits: {str(exc).removeprefix('target.runtime ')}") from None
        return self

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one objective is needed")
        for metric in value:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; choose from {list(METRICS)}")
        return value

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, value: Any) -> Any:
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


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    path = Path(path)
    data = read_yaml(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value, path)
    return study_config_from_dict(data, base_dir=path.parent, source=str(path))


PATH_OPTIONS = ("train", "validation", "test")  # task options that name files, relative to the config


def _resolve_pretrained(data: dict[str, Any], base_dir: Path, source: str) -> None:
    """Paths of a pretrained model and of the user's data files are relative to the config; the
    model's path goes into the task's options (its tokenizer or image processor prepares the data)."""
    from supernet.tasks import PRETRAINED_TASKS

    supernet = data.get("supernet")
    task = data.get("task")
    pretrained = supernet.get("pretrained") if isinstance(supernet, dict) else None
    name = task.get("name") if isinstance(task, dict) else None
    if isinstance(pretrained, str) and pretrained:
        pretrained = os.path.abspath(base_dir / pretrained)
        data["supernet"] = {**supernet, "pretrained": pretrained}
    if name not in PRETRAINED_TASKS:
        if isinstance(pretrained, str):
            raise ConfigError(f"{source}: supernet.pretrained needs task text or image-folder (the user's data, "
                              f"prepared by the model), not {name or 'digits'!r}")
        return
    options = task.get("options", {})
    if not isinstance(options, dict):
        return  # the schema names the error
    options = dict(options)
    for key in PATH_OPTIONS:
        if isinstance(options.get(key), str) and options[key]:
            options[key] = os.path.abspath(base_dir / options[key])
    if "model" in options and options["model"] != pretrained:
        raise ConfigError(f"{source}: task.options.model is set from supernet.pretrained; leave it out")
    if isinstance(pretrained, str):
        options["model"] = pretrained
    data["task"] = {**task, "options": options}


def study_config_from_dict(data: dict[str, Any], base_dir: Path = Path("."), source: str = "config") -> StudyConfig:
    data = dict(data)
    _resolve_pretrained(data, base_dir, source)
    space = data.get("space")
    try:
        if isinstance(space, str):
            data["space"] = SearchSpace.from_yaml(base_dir / space)
        elif isinstance(space, dict):
            data["space"] = SearchSpace.from_dict(space)
        elif "space" in data:
            raise ConfigError(f"{source}: space: expected a path or an inline mapping")
    except InputError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    extra = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{extra}"


def _set_dotted(data: dict, key: str, value: Any, path: Path) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: cannot override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def config_as_dict(config: StudyConfig) -> dict[str, Any]:
    """The resolved config as plain data (the space inlined, constraints as text)."""
    data = config.model_dump(exclude={"space", "constraints"})
    data["space"] = config.space.to_dict()
    data["constraints"] = [str(c) for c in config.constraints]
    return data
