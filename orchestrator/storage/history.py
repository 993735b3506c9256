"""What a study did over time: its hypervolume after each batch (`elastiq_hypervolume`) and its exports
(`elastiq_exports`), for `status` and `report`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import ExportRow, HypervolumeRow, dumps


def record_hypervolume(engine: Engine, study: str, evaluations: int, hypervolume: float, pareto_size: int) -> None:
    with Session(engine) as session, session.begin():
        session.add(HypervolumeRow(study=study, evaluations=evaluations, hypervolume=hypervolume,
                                   pareto_size=pareto_size))


def hypervolume_history(engine: Engine, study: str) -> list[tuple[int, float]]:
    """(evaluations, hypervolume) after each batch, in order."""
    with Session(engine) as session:
        return [(row.evaluations, row.hypervolume) for row in session.scalars(
            select(HypervolumeRow).where(HypervolumeRow.study == study).order_by(HypervolumeRow.id))]


@dataclass(frozen=True)
class ExportRecord:
    out_dir: str
    trials: list[int]
    summary: dict[str, Any]  # the manifest's honesty figures


def record_export(engine: Engine, study: str, out_dir: str, trials: list[int], manifest_sha256: str,
                  summary: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        session.add(ExportRow(study=study, out_dir=out_dir, trials=dumps(trials), manifest_sha256=manifest_sha256,
                              summary=dumps(summary)))


def exports_of(engine: Engine, study: str) -> list[ExportRecord]:
    with Session(engine) as session:
        return [ExportRecord(row.out_dir, json.loads(row.trials), json.loads(row.summary))
                for row in session.scalars(select(ExportRow).where(ExportRow.study == study).order_by(ExportRow.id))]
