"""Where models run and are measured: the hardware target, the measurement protocol, the Ray cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from orchestrator.config.base import Section
from predictors.measure import Protocol
from predictors.target import HardwareTarget
from search_space import InputError


class TargetConfig(Section):
    name: str = Field(HardwareTarget.name, min_length=1, max_length=200)
    device: Literal["cpu", "cuda"] = HardwareTarget.device
    threads: int = Field(HardwareTarget.threads, gt=0, le=1024)
    batch_size: int = Field(HardwareTarget.batch_size, gt=0, le=2**20)
    seq_len: int | None = Field(HardwareTarget.seq_len, gt=0, le=2**20)  # None: the task's own length
    dtype: Literal["float32"] = HardwareTarget.dtype
    # None: onnxruntime on cpu, aotinductor on cuda
    runtime: str | None = Field(HardwareTarget.runtime, min_length=1, max_length=100)
    # a decoder LM's latency: one generated token with this many tokens in context (None: seq_len, else the task's)
    context: int | None = Field(HardwareTarget.context, gt=1, le=2**20)

    @model_validator(mode="after")
    def _runtime_runs_here(self) -> TargetConfig:
        try:
            self.to_target()  # the target checks that its runtime runs on its device
        except InputError as exc:
            raise ValueError(str(exc).removeprefix("target.runtime ").removeprefix("target.runtime: ")) from None
        return self

    def to_target(self) -> HardwareTarget:
        return HardwareTarget(**self.model_dump())


# settings of the median-based protocol, which a figure no longer comes from
_REMOVED_MEASURE_KEYS = {"max_repeats": "every arch runs `passes` rounds of `burst` calls",
                         "max_cv": "a figure is the fastest call; the spread of the calls is recorded, not a limit",
                         "max_pass_cv": "use max_gap: how far the two halves of the rounds may disagree"}


class MeasureConfig(Section):
    archs: int = Field(200, gt=0, le=100_000)  # size of the latency dataset for the target
    passes: int = Field(Protocol.passes, gt=0, le=10_000)  # rounds, each a short burst of every arch in a new order
    burst: int = Field(Protocol.burst, gt=0, le=10_000)  # timed calls of an arch in a round
    # how far the fastest call of the odd rounds may stray from the even rounds' before the arch is measured afresh,
    # then flagged
    max_gap: float = Field(Protocol.max_gap, gt=0, le=10)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data):
        for key in _REMOVED_MEASURE_KEYS.keys() & (data.keys() if isinstance(data, dict) else set()):
            raise ValueError(f"{key} is no longer a setting: {_REMOVED_MEASURE_KEYS[key]}")
        return data

    def to_protocol(self) -> Protocol:
        return Protocol(passes=self.passes, burst=self.burst, max_gap=self.max_gap)


class RayConfig(Section):
    address: str | None = None  # None starts a local Ray; "auto" joins a running cluster
    workers: int = Field(2, gt=0, le=100_000)
    retries: int = Field(2, ge=0, le=1000)  # times a trial whose worker process dies is run again
    cpus_per_worker: int = Field(1, gt=0, le=1024)  # each evaluation worker's and training worker's (torch threads)
    # each evaluation worker's share of a GPU (fractions let several share one); it evaluates on the GPU it gets
    gpus_per_worker: float = Field(0.0, ge=0, le=64, allow_inf_nan=False)


