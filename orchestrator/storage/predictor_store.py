"""Fitted predictors as data (`elastiq_predictors`: the JSON state of `predictors.persist`, never code),
so a resumed search refits the same predictor instead of cross-validating every candidate again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import PredictorRow, dumps


@dataclass(frozen=True)
class StoredPredictor:
    id: int
    sha256: str  # as stored: whoever reads the artifact checks it
    artifact: bytes


def latest_predictor(engine: Engine, study: str, kind: str, target: str, n_train: int,
                     version: int) -> StoredPredictor | None:
    """The predictor last stored for this study, target and number of training rows, in this state version."""
    with Session(engine) as session:
        row = session.scalar(select(PredictorRow).where(
            PredictorRow.study == study, PredictorRow.kind == kind, PredictorRow.target == target,
            PredictorRow.n_train == n_train, PredictorRow.version == version).order_by(PredictorRow.id.desc()))
        return None if row is None else StoredPredictor(row.id, row.sha256, row.artifact)


def store_predictor(engine: Engine, study: str, kind: str, target: str, version: int, n_train: int, chosen: str,
                    cv_scores: dict, artifact: bytes) -> None:
    with Session(engine) as session, session.begin():
        session.add(PredictorRow(study=study, kind=kind, target=target, version=version, n_train=n_train,
                                 chosen=chosen, cv_scores=dumps(cv_scores),
                                 sha256=hashlib.sha256(artifact).hexdigest(), artifact=artifact))


@dataclass(frozen=True)
class PredictorScores:
    chosen: str
    n_train: int
    cv_scores: dict  # candidate -> its cross-validated scores (`predictors.models.Scores`)

    @property
    def chosen_scores(self) -> dict:
        return self.cv_scores[self.chosen]


def latest_scores(engine: Engine, study: str, kind: str, target: str) -> PredictorScores | None:
    """The cross-validated scores of the predictor last stored for this study and target, of any size."""
    with Session(engine) as session:
        row = session.scalar(select(PredictorRow).where(
            PredictorRow.study == study, PredictorRow.kind == kind, PredictorRow.target == target)
            .order_by(PredictorRow.id.desc()))
        return None if row is None else PredictorScores(row.chosen, row.n_train, json.loads(row.cv_scores))
