"""A hardware target's latency measurements (`elastiq_targets`, `elastiq_latency`).

Every figure is stored with what it was measured on (`HardwareTarget.measured_on`: runtime, version,
device and graph format) and read back only for the same: figures of different runtimes are never
mixed. A target name is bound to its settings and to the machine it was first measured on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import LatencyRow, StorageError, TargetRow, dumps
from predictors.measure import LatencyMeasurement
from predictors.target import HardwareTarget, fingerprint
from search_space import Arch

_SAME_MACHINE = ("cpu", "cores", "machine", "torch", "device")
# "measure": the dataset, measured alone (its scale); "search", "export": measured beside drift probes and
# put on the dataset's scale (latency_ms = raw_latency_ms / drift); None: stored before schema 3
SOURCES = ("measure", "search", "export")


@dataclass(frozen=True)
class StoredLatency:
    arch: Arch
    measurement: LatencyMeasurement
    source: str | None


def register_target(engine: Engine, target: HardwareTarget) -> int:
    """The target's id; refuses a name already used with other settings or on another machine."""
    with Session(engine) as session, session.begin():
        return _target_row(session, target).id


def _target_row(session: Session, target: HardwareTarget) -> TargetRow:
    here = fingerprint(target)
    row = session.scalar(select(TargetRow).where(TargetRow.name == target.name))
    if row is None:
        row = TargetRow(name=target.name, settings=dumps(target.to_dict()), fingerprint=dumps(here))
        session.add(row)
        session.flush()
        return row
    stored = json.loads(row.settings)
    if "runtime" not in stored:  # a target stored before runtimes were named: its measurements keep their
        stored["runtime"] = target.runtime  # own identity (the old TorchScript one) and are never mixed with these
        row.settings = dumps(stored)
    if stored != target.to_dict():
        raise StorageError(f"target {target.name!r} is stored with other settings {row.settings}; "
                           f"give the new settings another target name")
    stored = json.loads(row.fingerprint)
    differs = [k for k in _SAME_MACHINE if stored.get(k) != here.get(k)]
    if differs:
        raise StorageError(f"target {target.name!r} was measured on another machine ({differs[0]}: "
                           f"{stored.get(differs[0])!r} vs {here.get(differs[0])!r}); use another target name")
    return row


def _rows(session: Session, target: HardwareTarget, keys: Iterable[str] | None = None) -> list[LatencyRow]:
    target_id = session.scalar(select(TargetRow.id).where(TargetRow.name == target.name))
    if target_id is None:
        return []
    query = select(LatencyRow).where(LatencyRow.target_id == target_id, LatencyRow.measured_on == target.measured_on)
    if keys is not None:
        query = query.where(LatencyRow.arch_key.in_(list(keys)))
    return list(session.scalars(query))


def stored_latencies(engine: Engine, target: HardwareTarget,
                     keys: Iterable[str] | None = None) -> dict[str, StoredLatency]:
    """Arch key -> the target's stored measurement on its runtime (of `keys` only, if given)."""
    with Session(engine) as session:
        return {row.arch_key: _record(row) for row in _rows(session, target, keys)}


def latency_dataset(engine: Engine, target: HardwareTarget) -> tuple[list[Arch], np.ndarray, np.ndarray]:
    """(archs, median ms, flagged) of a target's stored measurements on its runtime."""
    records = list(stored_latencies(engine, target).values())
    if not records:
        raise StorageError(f"target {target.name!r} has no latency measurements on {target.measured_on}; "
                           f"run `elastiq measure -c CONFIG` first")
    return ([r.arch for r in records], np.array([r.measurement.latency_ms for r in records]),
            np.array([r.measurement.flagged for r in records], dtype=bool))


def drift_probes(engine: Engine, target: HardwareTarget, count: int = 8) -> list[tuple[Arch, LatencyMeasurement]]:
    """Archs of the target's dataset, spread over its latency range, with their stored measurements:
    measured again beside new archs, they tell how the machine runs now against when the dataset was
    measured. Only measurements taken alone (`elastiq measure`) and not flagged serve."""
    register_target(engine, target)  # refuses another machine than the target's
    return pick_drift_probes(stored_latencies(engine, target).values(), count)


def pick_drift_probes(records: Iterable[StoredLatency], count: int = 8) -> list[tuple[Arch, LatencyMeasurement]]:
    """`drift_probes` among records already read."""
    records = sorted((r for r in records if r.source in (None, "measure") and not r.measurement.flagged),
                     key=lambda r: (r.measurement.latency_ms, r.arch.key))
    picks = np.unique(np.linspace(0, len(records) - 1, min(count, len(records))).round().astype(int)) \
        if records else []
    return [(records[i].arch, records[i].measurement) for i in picks]


def store_latencies(engine: Engine, target: HardwareTarget, measured: Iterable[tuple[Arch, LatencyMeasurement]],
                    source: str) -> None:
    """Store measurements of the target in one transaction, each replacing the arch's stored one."""
    if source not in SOURCES:
        raise ValueError(f"a latency's source is one of {SOURCES}, not {source!r}")
    with Session(engine) as session, session.begin():
        # registered by whoever measured (its machine checked once); registered here only if it was not
        target_id = session.scalar(select(TargetRow.id).where(TargetRow.name == target.name)) \
            or _target_row(session, target).id
        measured = list(measured)
        for old in _rows(session, target, [arch.key for arch, _ in measured]):
            session.delete(old)
        session.flush()
        for arch, m in measured:
            session.add(LatencyRow(
                target_id=target_id, arch_key=arch.key, arch=arch.to_json(), measured_on=target.measured_on,
                latency_ms=m.latency_ms, iqr_ms=m.iqr_ms, cv=m.cv, n=m.n, attempts=m.attempts, flagged=m.flagged,
                passes=m.passes, pass_cv=m.pass_cv, gap=m.gap, source=source, drift=m.drift,
                raw_latency_ms=m.latency_ms if m.raw_latency_ms is None else m.raw_latency_ms,
                fingerprint=dumps(m.fingerprint)))


def _record(row: LatencyRow) -> StoredLatency:
    measurement = LatencyMeasurement(
        latency_ms=row.latency_ms, iqr_ms=row.iqr_ms, cv=row.cv, n=row.n, attempts=row.attempts, flagged=row.flagged,
        fingerprint=json.loads(row.fingerprint), passes=row.passes, pass_cv=row.pass_cv, gap=row.gap, drift=row.drift,
        raw_latency_ms=row.raw_latency_ms)
    return StoredLatency(Arch.from_json(row.arch), measurement, row.source)
