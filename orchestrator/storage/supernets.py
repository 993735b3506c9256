"""The supernet checkpoints studies evaluate with (`elastiq_supernets`): its sha256 keys the evaluation
cache, and its recorded path finds the checkpoint again when the config's path has moved."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.storage.schema import SupernetRow
from supernet.checkpoint import CheckpointError


def register_supernet(engine: Engine, sha256: str, path: Path, space_hash: str, task: str, steps: int) -> None:
    """Record a checkpoint (once: the first path it was seen at is kept)."""
    with Session(engine) as session, session.begin():
        if session.scalar(select(SupernetRow).where(SupernetRow.sha256 == sha256)) is None:
            session.add(SupernetRow(sha256=sha256, path=str(path), space_hash=space_hash, task=task, steps=steps))


def supernet_checkpoint(engine: Engine, configured: str, sha: str) -> Path:
    """Where the study's supernet checkpoint is: the config's path, else the one recorded when the search began."""
    candidates = [Path(configured)]
    with Session(engine) as session:
        row = session.scalar(select(SupernetRow).where(SupernetRow.sha256 == sha))
    if row is not None:
        candidates.append(Path(row.path))
    for path in candidates:
        if path.exists():
            return path.resolve()
    raise CheckpointError(f"the study's supernet checkpoint (sha256 {sha[:12]}) is not at "
                          + " nor ".join(str(p) for p in candidates))
