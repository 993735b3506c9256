"""The fine-tuning stage's records: candidates and every rung's result, per run.

A run is one study fine-tuned with one set of settings on one supernet: its key
is the sha256 of the three (its checkpoints live under it, so two studies on
one supernet never share a file), so the same `elastiq finetune` continues its run and
other settings start another beside it. The study's user attribute
`elastiq_finetune_run` names the run that status, report and export show.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import optuna
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.storage.schema import FinetuneCandidateRow, FinetuneRungRow, dumps

RUN_ATTR = "elastiq_finetune_run"
# settings that change nothing a run computes (where weights are kept)
_NOT_IN_KEY = ("directory",)


# settings only the lc scheduler reads, in the key of its runs alone (the runs of before they existed keep theirs)
_LC_ONLY = ("curve_model", "curve_model_weights")


def run_key(study: str, settings: dict[str, Any], supernet_sha256: str) -> str:
    kept = {k: v for k, v in settings.items()
            if k not in _NOT_IN_KEY and (k not in _LC_ONLY or settings.get("scheduler") == "lc")}
    return hashlib.sha256(dumps({"study": study, "settings": kept, "supernet": supernet_sha256}).encode()).hexdigest()


@dataclass(frozen=True)
class Rung:
    rung: int
    steps: int
    accuracy: float
    seconds: float
    checkpoint: str
    checkpoint_sha256: str


@dataclass
class CandidateRecord:
    arch_key: str
    trial: int
    metrics: dict[str, Any]  # the search's, with the inherited accuracy
    ended: str | None
    rungs: list[Rung] = field(default_factory=list)

    @property
    def last(self) -> Rung | None:
        return self.rungs[-1] if self.rungs else None


def set_current_run(study: optuna.Study, key: str, settings: dict[str, Any]) -> None:
    study.set_user_attr(RUN_ATTR, {"run_key": key, "settings": settings})


def current_run(study: optuna.Study) -> dict[str, Any] | None:
    run = study.user_attrs.get(RUN_ATTR)
    return run if isinstance(run, dict) and isinstance(run.get("run_key"), str) else None


def add_candidates(engine: Engine, study: str, key: str, candidates: list[tuple[str, int, dict]]) -> None:
    """(arch key, trial, metrics) of each candidate not in the run yet."""
    with Session(engine) as session, session.begin():
        known = set(session.scalars(select(FinetuneCandidateRow.arch_key).where(
            FinetuneCandidateRow.study == study, FinetuneCandidateRow.run_key == key)))
        for arch_key, trial, metrics in candidates:
            if arch_key not in known:
                session.add(FinetuneCandidateRow(study=study, run_key=key, arch_key=arch_key, trial=trial,
                                                 metrics=dumps(metrics)))


def run_keys(engine: Engine, study: str) -> set[str]:
    """The keys of every fine-tuning run the study's candidates were recorded under."""
    with Session(engine) as session:
        return set(session.scalars(select(FinetuneCandidateRow.run_key).where(FinetuneCandidateRow.study == study)
                                   .distinct()))


def load_run(engine: Engine, study: str, key: str) -> dict[str, CandidateRecord]:
    with Session(engine) as session:
        found = {row.arch_key: CandidateRecord(row.arch_key, row.trial, json.loads(row.metrics), row.ended)
                 for row in session.scalars(select(FinetuneCandidateRow).where(
                     FinetuneCandidateRow.study == study, FinetuneCandidateRow.run_key == key)
                     .order_by(FinetuneCandidateRow.id))}
        for row in session.scalars(select(FinetuneRungRow).where(
                FinetuneRungRow.study == study, FinetuneRungRow.run_key == key).order_by(FinetuneRungRow.rung)):
            if row.arch_key in found:
                found[row.arch_key].rungs.append(Rung(row.rung, row.steps, row.accuracy, row.seconds, row.checkpoint,
                                                      row.checkpoint_sha256))
    return found


def record_rung(engine: Engine, study: str, key: str, arch_key: str, rung: Rung) -> bool:
    """Store a rung once; False if it was stored already (a replayed result)."""
    try:
        with Session(engine) as session, session.begin():
            exists = session.scalar(select(FinetuneRungRow.id).where(
                FinetuneRungRow.study == study, FinetuneRungRow.run_key == key, FinetuneRungRow.arch_key == arch_key,
                FinetuneRungRow.rung == rung.rung))
            if exists is not None:
                return False
            session.add(FinetuneRungRow(study=study, run_key=key, arch_key=arch_key, rung=rung.rung, steps=rung.steps,
                                        accuracy=rung.accuracy, seconds=rung.seconds, checkpoint=rung.checkpoint,
                                        checkpoint_sha256=rung.checkpoint_sha256))
    except IntegrityError:
        return False
    return True


def mark_ended(engine: Engine, study: str, key: str, arch_key: str, ended: str) -> None:
    with Session(engine) as session, session.begin():
        row = session.scalar(select(FinetuneCandidateRow).where(
            FinetuneCandidateRow.study == study, FinetuneCandidateRow.run_key == key,
            FinetuneCandidateRow.arch_key == arch_key))
        if row is not None and row.ended is None:
            row.ended = ended
