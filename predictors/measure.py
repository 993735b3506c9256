"""Latency measurement protocol (DESIGN decision 5).

Warm-up, fixed threads, `inference_mode`, repeats in rounds until the median
is stable (or a cap), then median, IQR, coefficient of variation and n. A
measurement whose spread is too high is repeated, then flagged. On CUDA the
time comes from events after a synchronize. A measurement holds its target
through an exclusive lock, so two measurements never share the cores.
"""

from __future__ import annotations

import fcntl
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from predictors.target import HardwareTarget, fingerprint


@dataclass(frozen=True)
class Protocol:
    warmup: int = 10
    round_size: int = 20
    min_rounds: int = 2
    max_repeats: int = 400
    stable_within: float = 0.01  # relative change of the median between rounds
    max_cv: float = 0.10  # above this the measurement is repeated, then flagged
    attempts: int = 3


@dataclass(frozen=True)
class LatencyMeasurement:
    median_ms: float
    iqr_ms: float
    cv: float  # robust: IQR / 1.349 / median
    n: int
    attempts: int
    flagged: bool  # spread stayed above the protocol's max_cv
    fingerprint: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def holding(target: HardwareTarget, lock_dir: str | Path | None = None):
    """Exclusive use of the target on this machine for the duration of a measurement."""
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    with open(lock_dir / f"elastiq-target-{target.device}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def example_input(spec, target: HardwareTarget, seed: int = 0) -> torch.Tensor:
    """A batch shaped as the target runs it (inputs do not change the cost)."""
    tokens = target.seq_len or spec.seq_len
    generator = torch.Generator().manual_seed(seed)
    if spec.input_kind == "tokens":
        return torch.randint(spec.input_dim, (target.batch_size, tokens), generator=generator)
    return torch.randn(target.batch_size, tokens, spec.input_dim, generator=generator)


def _timer(target: HardwareTarget):
    if target.device == "cuda":
        def run_once(call) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            call()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def run_once(call) -> float:
            begin = time.perf_counter()
            call()
            return (time.perf_counter() - begin) * 1e3
    return run_once


def _one_attempt(call, target: HardwareTarget, protocol: Protocol) -> np.ndarray:
    run_once = _timer(target)
    for _ in range(protocol.warmup):
        call()
    times: list[float] = []
    previous = None
    while len(times) < protocol.max_repeats:
        times += [run_once(call) for _ in range(protocol.round_size)]
        median = float(np.median(times))
        rounds = len(times) // protocol.round_size
        if rounds >= protocol.min_rounds and previous is not None and \
                abs(median - previous) <= protocol.stable_within * previous:
            break
        previous = median
    return np.asarray(times)


def measure_latency(model: nn.Module, inputs: torch.Tensor, target: HardwareTarget,
                    protocol: Protocol = Protocol(), lock: bool = True) -> LatencyMeasurement:
    device = torch.device(target.device)
    model = model.to(device).eval()
    inputs = inputs.to(device)
    call = lambda: model(inputs)  # noqa: E731
    best = None
    with (holding(target) if lock else _nothing()), _threads(target.threads), torch.inference_mode():
        for attempt in range(1, protocol.attempts + 1):  # noqa: B007 - the count is reported
            times = _one_attempt(call, target, protocol)
            q1, median, q3 = np.percentile(times, [25, 50, 75])
            cv = float((q3 - q1) / 1.349 / median) if median > 0 else 0.0
            if best is None or cv < best[1]:
                best = (times, cv, float(median), float(q3 - q1))
            if cv <= protocol.max_cv:
                break
    times, cv, median, iqr = best
    return LatencyMeasurement(median_ms=median, iqr_ms=iqr, cv=cv, n=len(times), attempts=attempt,
                              flagged=cv > protocol.max_cv, fingerprint=fingerprint(target))


@contextmanager
def _nothing():
    yield
