"""A search's batches (`elastiq_batches`): opened before their trials are, closed with the trials' ids
once all are open, so that a resumed search knows what the last batch held (see `search.driver`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import BatchRow, dumps


@dataclass(frozen=True)
class Batch:
    id: int
    trials: frozenset[int] | None  # Optuna trial ids; None: its trials were still being opened


def open_batch(engine: Engine, study: str) -> int:
    with Session(engine) as session, session.begin():
        row = BatchRow(study=study)
        session.add(row)
        session.flush()
        return row.id


def close_batch(engine: Engine, batch: int, trial_ids: list[int]) -> None:
    with Session(engine) as session, session.begin():
        session.get(BatchRow, batch).trials = dumps(trial_ids)


def last_batch(engine: Engine, study: str) -> Batch | None:
    with Session(engine) as session:
        row = session.scalar(select(BatchRow).where(BatchRow.study == study).order_by(BatchRow.id.desc()).limit(1))
        if row is None:
            return None
        return Batch(row.id, None if row.trials is None else frozenset(json.loads(row.trials)))


def drop_batch(engine: Engine, batch: int) -> None:
    with Session(engine) as session, session.begin():
        session.delete(session.get(BatchRow, batch))
