"""The study config: one YAML file, parsed into typed, validated objects.

Unknown keys are errors. `space` may be inline or a path relative to the
config file. Overrides (from CLI flags) are dotted keys applied before
validation, so an override is checked exactly like the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.config.base import SEED, ConfigError, Section
from orchestrator.config.hardware import MeasureConfig, RayConfig, TargetConfig
from orchestrator.config.stages import (
    METRICS,
    Constraint,
    ExportConfig,
    FinetuneConfig,
    SearchConfig,
    parse_constraints,
)
from orchestrator.config.training import SupernetConfig, TaskConfig
from search_space import InputError, SearchSpace
from search_space.yaml_input import read_yaml
from supernet.tasks import QUALITY_DIRECTIONS, quality_metric


class StudyConfig(Section):
    study: str = Field(min_length=1, max_length=200)  # the length of the name columns
    storage: str = "sqlite:///elastiq.db"
    seed: int = SEED
    task: TaskConfig = TaskConfig()
    space: SearchSpace
    supernet: SupernetConfig = SupernetConfig()
    target: TargetConfig = TargetConfig()
    measure: MeasureConfig = MeasureConfig()
    # default: the task's quality (accuracy, or a language model's perplexity) and latency_ms
    objectives: dict[str, Literal["maximize", "minimize"]] = Field(default_factory=dict)
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

    @model_validator(mode="before")
    @classmethod
    def _default_objectives(cls, data: Any) -> Any:
        if isinstance(data, dict) and "objectives" not in data:
            task = data.get("task")
            name = task.get("name") if isinstance(task, dict) else getattr(task, "name", None)
            quality = quality_metric(name or TaskConfig().name)
            data = {**data, "objectives": {quality: QUALITY_DIRECTIONS[quality], "latency_ms": "minimize"}}
        return data

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("at least one objective is needed")
        for metric in value:
            if metric not in METRICS:
                raise ValueError(f"unknown metric {metric!r}; choose from {list(METRICS)}")
        return value

    @model_validator(mode="after")
    def _the_tasks_quality(self) -> StudyConfig:
        """A task is scored by one quality metric: an objective or constraint on another is refused, as is
        a quality objective in the direction that makes it worse."""
        quality = quality_metric(self.task.name)
        named = [*self.objectives, *(c.metric for c in self.constraints)]
        for other in QUALITY_DIRECTIONS:
            if other != quality and other in named:
                raise ValueError(f"task {self.task.name} scores a model by {quality}, not {other}: give "
                                 f"objectives: {{{quality}: {QUALITY_DIRECTIONS[quality]}, ...}}")
        if self.objectives.get(quality, QUALITY_DIRECTIONS[quality]) != QUALITY_DIRECTIONS[quality]:
            raise ValueError(f"objectives: {quality} is to {QUALITY_DIRECTIONS[quality]}, not to "
                             f"{self.objectives[quality]}")
        return self

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, value: Any) -> Any:
        return parse_constraints(value)


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
            raise ConfigError(f"{source}: supernet.pretrained needs task text, image-folder or causal-lm (the user's "
                              f"data, prepared by the model), not {name or 'digits'!r}")
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
