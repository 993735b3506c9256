"""Checkpoint IO: a torch file of tensors and plain data, plus a JSON record.

`NAME.pt` holds the state (model, optimizer, schedule, step, RNG states);
`NAME.pt.json` holds the metadata (space hash, task, step, seed, torch
version) and the sha256 of `NAME.pt`. Loading checks the record first, so a
changed, truncated or foreign file is refused before anything is unpickled,
and then loads with `weights_only=True`.

Each file is written atomically (temporary file, then rename), and a save
puts the new record beside the old one (`NAME.pt.json.next`) before it
replaces `NAME.pt`: a process killed anywhere in a save leaves either the old
checkpoint with its record or the new one with its pending record, and
loading takes whichever record matches the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
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


def pending_record_path(path: Path) -> Path:
    """Where a save puts the new record until the new checkpoint file is in place."""
    return path.with_name(path.name + ".json.next")


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


def write_state(path: Path, state: dict[str, Any], before: Callable[[str], None] | None = None) -> str:
    """Write a training state (tensors and plain data) atomically; its sha256. `before(sha256)` runs once
    the state is serialized and before the file is replaced (a checkpoint's pending record)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    if before is not None:
        before(sha256)
    atomic_write(path, lambda f: f.write(data))
    return sha256


def save_checkpoint(path: str | Path, state: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Write state and its record; return the record (with the sha256)."""
    path = Path(path)
    record = {"format": FORMAT_VERSION, **metadata, "torch_version": torch.__version__, "file": path.name}
    for stale in path.parent.glob(f".{path.name}.*"):  # temporary files of a save that was killed
        stale.unlink(missing_ok=True)
    pending = pending_record_path(path)

    def pending_record(sha256: str) -> None:
        record["sha256"] = sha256
        atomic_write(pending, lambda f: f.write(json.dumps(record, indent=2, sort_keys=True).encode()))

    write_state(path, state, before=pending_record)
    os.replace(pending, record_path(path))
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """The checkpoint's record (its pending one if a save was killed before the record was in place)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    source = record_path(path)
    if not source.exists() and pending_record_path(path).exists():
        source = pending_record_path(path)
    return _parse_record(path, source)


def _parse_record(path: Path, source: Path) -> dict[str, Any]:
    try:
        record = json.loads(source.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: its record {source.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION or "sha256" not in record:
        raise CheckpointError(f"checkpoint {path}: record is not an elastiq checkpoint record of format "
                              f"{FORMAT_VERSION}")
    return record


def _matching_record(path: Path, actual_sha256: str) -> dict[str, Any]:
    """The record whose sha256 is the file's: its own, or the pending one of a save killed midway."""
    record = read_record(path)
    pending = pending_record_path(path)
    if record.get("sha256") != actual_sha256 and pending.exists():
        try:
            candidate = _parse_record(path, pending)
        except CheckpointError:
            return record
        if candidate.get("sha256") == actual_sha256:
            return candidate
    return record


def load_checkpoint(path: str | Path, space: SearchSpace | None = None, task: str | None = None,
                    expected_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, record) after checking hash, space and task; refuses anything else."""
    path = Path(path)
    read_record(path)  # a missing file or record is named before the file is hashed
    actual = sha256_file(path)
    record = _matching_record(path, actual)
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
        with warnings.catch_warnings():  # a refused file is one line, not torch's warnings about it too
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"checkpoint {path}: cannot be loaded ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(state).__name__}, not a checkpoint's state")
    return state, record
