"""The evaluation cache (`elastiq_evaluations`): an arch evaluated with the same supernet, split, target and
fine-tuning budget is never evaluated again (DESIGN decision 3), across batches, crashes and studies."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import EvaluationRow, dumps


@dataclass(frozen=True)
class CacheKey:
    supernet_sha256: str
    split: str
    target: str  # the target's name
    finetune_steps: int


def cached_metrics(engine: Engine, key: CacheKey, arch_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Arch key -> its cached metrics, for those of `arch_keys` in the cache."""
    with Session(engine) as session:
        rows = session.scalars(select(EvaluationRow).filter_by(**asdict(key))
                               .where(EvaluationRow.arch_key.in_(list(arch_keys))))
        return {row.arch_key: json.loads(row.metrics) for row in rows}


def cache_metrics(engine: Engine, key: CacheKey, metrics: dict[str, dict[str, Any]]) -> None:
    """Cache each arch's metrics (arch key -> metrics), in one transaction."""
    with Session(engine) as session, session.begin():
        for arch_key, values in metrics.items():
            session.add(EvaluationRow(arch_key=arch_key, metrics=dumps(values), **asdict(key)))
