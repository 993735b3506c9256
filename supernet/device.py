"""Where training and evaluation compute: the CPU, or a CUDA GPU with mixed precision.

`auto` picks CUDA when this process sees a GPU. On CUDA, training runs under
autocast in bfloat16 where the GPU supports it (no loss scaling needed), else in
float16 with a gradient scaler; evaluation always computes in float32, since the
accuracy it records must be the deployed model's. The data of a run is moved to
the device once, not per batch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from search_space import InputError

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(InputError):
    """A device asked for that this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu` or `cuda` -> the torch device; `cuda` where no GPU is visible is refused."""
    if name not in DEVICES:
        raise DeviceError(f"device {name!r}: choose from {list(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(f"device cuda: no CUDA GPU is visible to this process (torch {torch.__version__}, "
                          f"{build}); use device cpu or auto")
    return torch.device(name)


class MixedPrecision:
    """Autocast and, for float16, a gradient scaler; a no-op on the CPU.

    Use: `with precision.autocast(): loss = ...`, then `precision.backward(loss)`,
    `precision.unscale(optimizer)` before clipping, `precision.step(optimizer)`.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.dtype: torch.dtype | None = None
        if device.type == "cuda":
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:  # the scaler skips a step whose gradients overflowed and lowers its scale
            self.scaler.step(optimizer)
            self.scaler.update()

    @property
    def scales_loss(self) -> bool:
        """Whether overflowing float16 gradients are expected now and then (the scaler's business)."""
        return self.scaler is not None

    def describe(self) -> str:
        return "float32" if self.dtype is None else f"autocast {str(self.dtype).removeprefix('torch.')}"


def to_cpu(state):
    """A state dict (nested) with every tensor on the CPU: checkpoints load anywhere."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {key: to_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(value) for value in state)
    return state


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory, within a cgroup's limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = max(0, int(limit) - used) if available is None else min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available
