"""`elastiq measure`: the latency dataset of a study's hardware target, in the database.

The archs come from the study seed, so a second run asks for the same list
and measures only what is missing: an interrupted run loses at most the arch
it was measuring. Measurements from another machine under the same target
name are refused rather than mixed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.config import StudyConfig
from orchestrator.storage.schema import LatencyRow, StorageError, TargetRow, connect, dumps
from predictors.dataset import measure_archs, stratified_archs
from predictors.measure import LatencyMeasurement, Protocol
from predictors.target import HardwareTarget, fingerprint
from search_space import Arch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.train import load_supernet

log = logging.getLogger("elastiq.measure")
_SAME_MACHINE = ("cpu", "cores", "machine", "torch", "device")


def target_of(config: StudyConfig) -> HardwareTarget:
    return HardwareTarget(**config.target.model_dump())


def register_target(session: Session, target: HardwareTarget) -> TargetRow:
    """The target's row; refuses a name already used with other settings or on another machine."""
    here = fingerprint(target)
    row = session.scalar(select(TargetRow).where(TargetRow.name == target.name))
    if row is None:
        row = TargetRow(name=target.name, settings=dumps(target.to_dict()), fingerprint=dumps(here))
        session.add(row)
        session.flush()
        return row
    stored = json.loads(row.settings)
    if "runtime" not in stored:  # a target stored before runtimes were named: its measurements keep their
        stored["runtime"] = target.runtime  # own form (the old TorchScript one) and are never mixed with these
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


def measured_latencies(session: Session, target_id: int, form: str) -> dict[str, LatencyRow]:
    """The target's measurements taken on `form` (its runtime, version and device) only."""
    rows = session.scalars(select(LatencyRow).where(LatencyRow.target_id == target_id,
                                                    LatencyRow.backend == form))
    return {row.arch_key: row for row in rows}


def run_measure(config: StudyConfig, count: int | None = None, progress: bool = True) -> str:
    target = target_of(config)
    task = load_task(config.task.name, config.seed, config.task.options)
    checkpoint = Path(config.supernet.checkpoint)
    if checkpoint.exists():
        supernet = load_supernet(checkpoint, config.space, task)
    else:  # latency does not depend on the weights' values
        supernet = Supernet(config.space, task.spec, seed=config.seed).eval()
    if target.seq_len is not None and target.seq_len > task.spec.seq_len:
        raise StorageError(f"target.seq_len {target.seq_len} is longer than the task's {task.spec.seq_len} tokens")
    engine = connect(config.storage)  # only once the inputs are known good: nothing written before
    wanted = stratified_archs(config.space, count or config.measure.archs, np.random.default_rng(config.seed))
    with Session(engine) as session, session.begin():
        target_id = register_target(session, target).id
        done = {key: (row.id, row.flagged)
                for key, row in measured_latencies(session, target_id, target.form).items()}
    if not checkpoint.exists():
        log.info("no supernet checkpoint at %s: measuring with initial weights", checkpoint)
    # a flagged measurement (its passes spread too much: the machine was not steady) is taken again
    missing = [arch for arch in wanted if arch.key not in done or done[arch.key][1]]
    again = {arch.key for arch in missing if arch.key in done}
    protocol = Protocol(**config.measure.protocol_options())
    flagged = 0
    for record in measure_archs(supernet, missing, target, protocol, passes=config.measure.passes, seed=config.seed,
                                progress=progress):
        flagged += record.measurement.flagged
        with Session(engine) as session, session.begin():  # committed as they come: a crash loses one chunk at most
            if record.arch.key in again:
                session.delete(session.get(LatencyRow, done[record.arch.key][0]))
                session.flush()
            session.add(latency_row(target_id, record.arch, record.measurement.to_dict(), source="measure",
                                    form=target.form))
    with Session(engine) as session:
        rows = list(measured_latencies(session, target_id, target.form).values())
    engine.dispose()
    return (f"target {target.name}: {len(missing)} archs measured now ({len(again)} flagged before), "
            f"{len(rows)} in the dataset; "
            f"median spread within a pass {np.median([r.cv for r in rows]) * 100:.1f}%, between passes "
            f"{np.median([r.pass_cv for r in rows]) * 100:.1f}%; {sum(r.flagged for r in rows)} flagged "
            f"({flagged} of this run)")


def latency_row(target_id: int, arch: Arch, m: dict, source: str, form: str) -> LatencyRow:
    """A measurement as stored: `source` says how it was taken ("measure": alone, the dataset's scale;
    "search", "export": beside drift probes, put on that scale); `form`, on what (the target's runtime)."""
    return LatencyRow(target_id=target_id, arch_key=arch.key, arch=arch.to_json(), backend=form,
                      median_ms=m["median_ms"], iqr_ms=m["iqr_ms"], cv=m["cv"], n=m["n"], attempts=m["attempts"],
                      flagged=m["flagged"], passes=m.get("passes", 1), pass_cv=m.get("pass_cv", 0.0),
                      source=source, drift=m.get("drift"),
                      raw_median_ms=m["median_ms"] if m.get("raw_median_ms") is None else m["raw_median_ms"],
                      fingerprint=dumps(m["fingerprint"]))


def latency_dataset(session: Session, target: HardwareTarget) -> tuple[list[Arch], np.ndarray, np.ndarray]:
    """(archs, median ms, flagged) of a target's stored measurements on its runtime."""
    row = session.scalar(select(TargetRow).where(TargetRow.name == target.name))
    rows = [] if row is None else list(measured_latencies(session, row.id, target.form).values())
    if not rows:
        raise StorageError(f"target {target.name!r} has no latency measurements on {target.form}; "
                           f"run `elastiq measure -c CONFIG` first")
    return ([Arch.from_json(r.arch) for r in rows], np.array([r.median_ms for r in rows]),
            np.array([r.flagged for r in rows], dtype=bool))


def drift_probes(session: Session, target: HardwareTarget, count: int = 8) -> list[tuple[Arch, LatencyMeasurement]]:
    """Archs of the target's dataset, spread over its latency range, with their stored measurements:
    measured again beside new archs, they tell how the machine runs now against when the dataset was
    measured. Only measurements taken alone (`elastiq measure`) and not flagged serve."""
    target_id = register_target(session, target).id
    rows = [r for r in measured_latencies(session, target_id, target.form).values()
            if r.source in (None, "measure") and not r.flagged]
    rows.sort(key=lambda r: (r.median_ms, r.arch_key))
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int)) if rows else []
    return [(Arch.from_json(rows[i].arch), stored_measurement(rows[i])) for i in picks]


def stored_measurement(row: LatencyRow) -> LatencyMeasurement:
    return LatencyMeasurement(median_ms=row.median_ms, iqr_ms=row.iqr_ms, cv=row.cv, n=row.n, attempts=row.attempts,
                              flagged=row.flagged, fingerprint=json.loads(row.fingerprint), passes=row.passes,
                              pass_cv=row.pass_cv, drift=row.drift, raw_median_ms=row.raw_median_ms)
