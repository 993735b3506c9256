"""Latency on a target's scale, measured once and stored: `measure_and_store` serves `elastiq measure`
(the dataset, measured alone), the search and the export (beside drift probes, put on the dataset's
scale). `run_measure` is `elastiq measure`.

The dataset's archs come from the study seed, so a second run asks for the same list and measures only
what is missing: an interrupted run loses at most the chunk it was measuring. Measurements from another
machine under the same target name are refused rather than mixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config import StudyConfig
from orchestrator.storage.latency import pick_drift_probes, register_target, store_latencies, stored_latencies
from orchestrator.storage.schema import StorageError, connect
from predictors.dataset import measure_archs, stratified_archs
from predictors.measure import DriftCheck, LatencyMeasurement
from predictors.target import decode_context
from search_space import Arch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import load_supernet

log = logging.getLogger("elastiq.measure")

Probes = list[tuple[Arch, LatencyMeasurement]]
# (archs to measure, drift probes, how many of the target's measurements are stored) -> chunks of
# (arch, measurement), each stored as it comes
Measure = Callable[[list[Arch], Probes, int], Iterable[list[tuple[Arch, LatencyMeasurement]]]]


class LatencyRefused(Exception):
    """The drift probes measured beside a batch refused it: the machine was not steady enough."""


@dataclass(frozen=True)
class MeasuredLatencies:
    latencies: dict[str, LatencyMeasurement]  # arch key -> on the dataset's scale, stored or measured now
    measured_now: tuple[str, ...]  # arch keys
    remeasured: int  # of them, flagged before and measured again
    refused: str | None = None  # why the probes refused the batch (its archs then have no latency)


# (archs to measure, drift probes, how many of the target's measurements are stored) -> the archs' measurements
# on the dataset's scale and the probes' verdict (`predictors.measure.measure_beside_probes`), or None where the
# measurement failed (the batch then keeps no latency)
MeasureBatch = Callable[[list[Arch], Probes, int], "tuple[list[LatencyMeasurement], DriftCheck] | None"]


def beside_probes(measure_batch: MeasureBatch) -> Measure:
    """The `Measure` of the search and the export: the batch measured beside the target's drift probes in one
    go, refused (LatencyRefused) where the probes refuse it."""

    def measure(todo: list[Arch], probes: Probes, stored: int):
        outcome = measure_batch(todo, probes, stored)
        if outcome is None:
            return
        measurements, check = outcome
        if not check.accepted:
            raise LatencyRefused(check.reason)
        yield list(zip(todo, measurements, strict=True))

    return measure


def measure_and_store(engine, target, archs: list[Arch], measure: Measure, source: str) -> MeasuredLatencies:
    """The latency of each of `archs` on the target: read where stored, else measured by `measure` and
    stored. `source` "measure": the dataset, measured alone, where a flagged figure (its passes spread too
    much: the machine was not steady) is taken again; "search", "export": beside the target's drift probes,
    and `measure` raises LatencyRefused if they refuse the batch (nothing of it is stored)."""
    register_target(engine, target)  # refuses another machine than the target's
    alone = source == "measure"
    records = stored_latencies(engine, target)  # read once: the figures, the probes and their count
    stored = {key: record.measurement for key, record in records.items()}
    found = {a.key: stored[a.key] for a in archs if a.key in stored and not (alone and stored[a.key].flagged)}
    todo = list({a.key: a for a in archs if a.key not in found}.values())
    if not todo:
        return MeasuredLatencies(found, (), 0)
    probes = [] if alone else pick_drift_probes(records.values())
    measured: list[str] = []
    try:
        for chunk in measure(todo, probes, len(stored)):
            store_latencies(engine, target, chunk, source)
            found.update((arch.key, m) for arch, m in chunk)
            measured += [arch.key for arch, _ in chunk]
    except LatencyRefused as refusal:
        return MeasuredLatencies(found, tuple(measured), 0, refused=str(refusal))
    return MeasuredLatencies(found, tuple(measured), sum(key in stored for key in measured))


def run_measure(config: StudyConfig, count: int | None = None, progress: bool = True) -> str:
    target = config.target.to_target()
    task = load_task(config.task.name, config.seed, config.task.options)
    checkpoint = Path(config.supernet.checkpoint)
    if checkpoint.exists():
        supernet = load_supernet(checkpoint, config.space, task)
    else:  # latency does not depend on the weights' values
        supernet = Supernet(config.space, task.spec, seed=config.seed).eval()
    if target.seq_len is not None and target.seq_len > task.spec.seq_len:
        raise StorageError(f"target.seq_len {target.seq_len} is longer than the task's {task.spec.seq_len} tokens")
    if task.spec.style.causal:
        decode_context(target, task.spec)  # a context past the model's positions: refused before anything is written
    flagged = 0

    def alone(todo: list[Arch], _probes: Probes, _stored: int):
        nonlocal flagged
        for record in measure_archs(supernet, todo, target, config.measure.to_protocol(), seed=config.seed,
                                    progress=progress):
            flagged += record.measurement.flagged
            yield [(record.arch, record.measurement)]

    engine = connect(config.storage)  # only once the inputs are known good: nothing written before
    try:
        register_target(engine, target)
        if not checkpoint.exists():
            log.info("no supernet checkpoint at %s: measuring with initial weights", checkpoint)
        wanted = stratified_archs(config.space, count or config.measure.archs, np.random.default_rng(config.seed))
        outcome = measure_and_store(engine, target, wanted, alone, source="measure")
        dataset = [r.measurement for r in stored_latencies(engine, target).values()]
    finally:
        engine.dispose()
    gaps = [m.gap for m in dataset if m.gap is not None]
    return (f"target {target.name}: {len(outcome.measured_now)} archs measured now ({outcome.remeasured} flagged "
            f"before), {len(dataset)} in the dataset; an arch's latency is its fastest call, and its two halves of "
            f"rounds agree within {np.median(gaps) * 100 if gaps else 0:.2f}% (median; the calls themselves "
            f"spread {np.median([m.cv for m in dataset]) * 100:.1f}%); {sum(m.flagged for m in dataset)} flagged "
            f"({flagged} of this run: halves further apart than measure.max_gap {config.measure.max_gap:.1%})")
