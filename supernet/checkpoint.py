"""Checkpoint IO: a torch file of tensors and plain data, plus a JSON record.

`NAME.pt` holds the state (model, optimizer, schedule, step, RNG states);
`NAME.pt.json` holds the metadata (space hash, task, step, seed, torch
version) and the sha256 of `NAME.pt`. Loading checks the record first, so a
changed, truncated or foreign file is refused before anything is unpickled,
and then loads with `weights_only=True`. Writes are atomic (temporary file,
then rename), so an interrupted save leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from search_space import InputError, SearchSpace

FORMAT_VERSION = 1


class CheckpointError(InputError):
    """A checkpoint that is missing, altered, truncated, or of another space or task."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def atomic_write(path: Path, write) -> None:
    """Write through `write(file)` to a temporary file, then rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Write state and its record; return the record (with the sha256)."""
    path = Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    record = {"format": FORMAT_VERSION, **metadata, "torch_version": torch.__version__,
              "sha256": sha256_file(path), "file": path.name}
    atomic_write(record_path(path), lambda f: f.write(json.dumps(record, indent=2, sort_keys=True).encode()))
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        record = json.loads(record_path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: its record {record_path(path).name} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION or "sha256" not in record:
        raise CheckpointError(f"checkpoint {path}: record is not an elastiq checkpoint record of format "
                              f"{FORMAT_VERSION}")
    return record


def load_checkpoint(path: str | Path, space: SearchSpace | None = None, task: str | None = None,
                    expected_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, record) after checking hash, space and task; refuses anything else."""
    path = Path(path)
    record = read_record(path)
    actual = sha256_file(path)
    if actual != record["sha256"] or (expected_sha256 is not None and actual != expected_sha256):
        raise CheckpointError(f"checkpoint {path}: sha256 {actual[:12]} does not match its record "
                              f"{(expected_sha256 or record['sha256'])[:12]} (changed or truncated file)")
    if space is not None and record.get("space_hash") != space.hash:
        raise CheckpointError(f"checkpoint {path}: trained on space {record.get('space_name')!r} "
                              f"(hash {str(record.get('space_hash'))[:12]}), not on space {space.name!r} "
                              f"(hash {space.hash[:12]})")
    if task is not None and record.get("task") != task:
        raise CheckpointError(f"checkpoint {path}: trained on task {record.get('task')!r}, not {task!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"checkpoint {path}: cannot be loaded ({type(exc).__name__})") from None
    return state, record
