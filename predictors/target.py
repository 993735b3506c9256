"""`HardwareTarget`: where and how latency counts (device, runtime, threads, batch), plus the
fingerprint of the machine and runtime a latency figure is only valid for."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from predictors.runtimes import DEFAULT_RUNTIME, Program, Runtime, runtime_named
from search_space import InputError

# how a figure is taken from its timed calls (`predictors.measure`: the fastest): part of what it is measured
# on, so the medians stored before are never mixed with these
ESTIMATE = "fastest"


@dataclass(frozen=True)
class HardwareTarget:
    name: str = "cpu"
    device: str = "cpu"  # cpu | cuda
    threads: int = 1
    batch_size: int = 1
    seq_len: int | None = None  # None: the task's own length
    dtype: str = "float32"
    runtime: str | None = None  # None: the device's default (ONNX Runtime on a CPU)
    # a decoder LM's latency is one generated token with this many tokens in its KV cache's context
    # (`onnx_decoder`); None: the sequence length
    context: int | None = None

    def __post_init__(self) -> None:
        # the fields' types and ranges are checked where a target is read (`orchestrator.config.TargetConfig`);
        # that its runtime runs on its device, here
        if self.device not in DEFAULT_RUNTIME:
            raise InputError(f"target.device: {self.device!r} is not one of {', '.join(DEFAULT_RUNTIME)}")
        if self.runtime is None:
            object.__setattr__(self, "runtime", DEFAULT_RUNTIME[self.device])
        runtime_named(self.runtime).require(self.device)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.context is None:  # only where set: a target stored before it keeps its settings and key
            del data["context"]
        return data

    @property
    def inference_runtime(self) -> Runtime:
        return runtime_named(self.runtime)

    @property
    def measured_on(self) -> str:
        """What its latency figures are measured on (runtime, version, device, graph format, estimate; stored with
        each): measurements of different runtimes, versions, devices or estimates are never mixed."""
        return f"{self.inference_runtime.measured_on(self.device)}-{ESTIMATE}"

    def deploy(self, subnet: nn.Module, example: Tensor) -> Program:
        """The runtime's artifact of `subnet`, built, loaded and checked against it; a decoder LM's with its
        KV cache, timed as one generated token at `context` (default: `example`'s length)."""
        style = getattr(getattr(subnet, "stem", None), "style", None)
        if style is not None and style.causal:
            return self.inference_runtime.deploy_decoder(subnet, example, self.context or example.shape[1],
                                                         self.device, self.threads)
        return self.inference_runtime.deploy(subnet, example, self.device, self.threads)

    @property
    def key(self) -> str:
        """Identity of the target's settings (the name excluded)."""
        settings = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def decode_context(target: HardwareTarget, spec) -> int:
    """The context a decoder LM's latency is measured at on `target` (its own, else its sequence length, else
    the task's); refused past the model's positions."""
    context = target.context or target.seq_len or spec.seq_len
    if spec.style.positions is not None and context > spec.style.positions:
        raise InputError(f"target {target.name!r}: a context of {context:,} tokens is past the "
                         f"{spec.style.positions:,} positions of the model")
    return context


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(target: HardwareTarget) -> dict[str, Any]:
    """What a latency figure is only valid for: recorded with every measurement."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
                            "torch": torch.__version__, "device": target.device,
                            **target.inference_runtime.fingerprint(target.device, target.threads)}
    if target.device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
