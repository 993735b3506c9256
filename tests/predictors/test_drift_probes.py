"""Measuring beside drift probes, on a simulated clock: each model advances the clock by its cost
(times a slowdown that the test sets, as other work on the cores would), so the verdicts do not
depend on this machine's speed or load."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import predictors.measure as measure
from predictors.measure import LatencyMeasurement, Protocol, measure_beside_probes
from predictors.target import HardwareTarget

PROTOCOL = Protocol(warmup=1, attempts=3)
TARGET = HardwareTarget("simulated")


class Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Costly(torch.nn.Module):
    """A model whose call takes `cost_ms` times its current slowdown, on the simulated clock."""

    def __init__(self, clock: Clock, cost_ms: float, slowdown=lambda: 1.0):
        super().__init__()
        self.clock, self.cost_ms, self.slowdown = clock, cost_ms, slowdown

    def forward(self, x):
        self.clock.now += self.cost_ms * self.slowdown() / 1e3
        return x


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(measure, "time", clock)  # measure_many times with time.perf_counter
    monkeypatch.setattr(measure, "holding", lambda target: _nothing())  # no lock file for a simulated target
    return clock


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def reference(ms: float) -> LatencyMeasurement:
    """A probe's stored measurement: 15 passes, 3% spread between them."""
    return LatencyMeasurement(latency_ms=ms, iqr_ms=0.0, cv=0.01, n=75, attempts=1, flagged=False, fingerprint={},
                              passes=15, pass_cv=0.03)


PROBE_MS = [0.2, 0.4, 0.8, 1.2, 1.6, 2.0]


def run(clock, model_slowdown, probe_slowdowns, passes=15, seed=0):
    models = [Costly(clock, ms, model_slowdown) for ms in (0.5, 1.0)]
    probes = [Costly(clock, ms, slow) for ms, slow in zip(PROBE_MS, probe_slowdowns, strict=True)]
    return measure_beside_probes(models, probes, [reference(ms) for ms in PROBE_MS], torch.zeros(1), TARGET,
                                 replace(PROTOCOL, passes=passes), np.random.default_rng(seed))


def test_a_machine_as_fast_as_its_dataset_is_accepted_at_once(clock):
    measured, check = run(clock, lambda: 1.0, [lambda: 1.0] * 6)
    assert check.accepted and check.attempts == 1 and check.drift == pytest.approx(1.0)
    assert [m.latency_ms for m in measured] == pytest.approx([0.5, 1.0])
    assert all(m.drift == pytest.approx(1.0) and m.raw_latency_ms == pytest.approx(m.latency_ms) for m in measured)


def test_an_even_slowdown_is_repeated_then_divided_out(clock):
    """Everything 25% slower (a slower spell, or work slowing every model alike): the raw
    latencies are 25% high; on the dataset's scale they are right."""
    measured, check = run(clock, lambda: 1.25, [lambda: 1.25] * 6)
    assert check.accepted and check.attempts == PROTOCOL.attempts and check.drift == pytest.approx(1.25)
    assert [m.raw_latency_ms for m in measured] == pytest.approx([0.625, 1.25])
    assert [m.latency_ms for m in measured] == pytest.approx([0.5, 1.0])
    assert "normalized" in check.reason


def test_a_slowdown_that_passes_is_waited_out(clock):
    """Work that shares the cores during the first attempt only: the second attempt is clean."""
    calls = {"n": 0}
    per_attempt = len(PROBE_MS) + 2  # models measured in an attempt
    rounds_in_first = (PROTOCOL.warmup + 15 * 6) * per_attempt

    def busy_at_first():
        calls["n"] += 1
        return 1.4 if calls["n"] <= rounds_in_first else 1.0

    measured, check = run(clock, busy_at_first, [busy_at_first] * 6)
    assert check.accepted and check.attempts == 2 and check.drift == pytest.approx(1.0)
    assert [m.latency_ms for m in measured] == pytest.approx([0.5, 1.0])


def test_uneven_slowdowns_are_refused(clock):
    """Half the probes slowed by 60%, half not: no single factor explains the machine, so no
    measurement of the batch can be trusted."""
    measured, check = run(clock, lambda: 1.3, [lambda: 1.0, lambda: 1.6] * 3)
    assert not check.accepted and check.attempts == PROTOCOL.attempts
    assert check.spread > check.noise_floor and "refused" in check.reason


def test_the_noise_floor_grows_with_the_probes_spread(clock):
    noisy = [LatencyMeasurement(latency_ms=ms, iqr_ms=0.0, cv=0.2, n=15, attempts=1, flagged=False, fingerprint={},
                                passes=3, pass_cv=0.30) for ms in PROBE_MS]
    models = [Costly(clock, 1.0)]
    probes = [Costly(clock, ms, slow) for ms, slow in zip(PROBE_MS, [lambda: 1.0, lambda: 1.15] * 3, strict=True)]
    _, check = measure_beside_probes(models, probes, noisy, torch.zeros(1), TARGET, PROTOCOL,
                                     np.random.default_rng(0))
    assert check.noise_floor > 0.15 and check.accepted  # 15% between probes is within what 30% spread explains


def test_without_a_dataset_the_models_are_measured_as_they_are(clock):
    measured, check = measure_beside_probes([Costly(clock, 0.7, lambda: 1.3)], [], [], torch.zeros(1), TARGET,
                                            replace(PROTOCOL, passes=3), np.random.default_rng(0))
    assert check.accepted and "as is" in check.reason
    assert measured[0].latency_ms == pytest.approx(0.91) and measured[0].drift is None
    with pytest.raises(ValueError, match="references"):
        measure_beside_probes([torch.nn.Identity()], [torch.nn.Identity()], [], torch.zeros(1), TARGET,
                              replace(PROTOCOL, passes=3), np.random.default_rng(0))
