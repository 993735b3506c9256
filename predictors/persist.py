"""Predictor artifacts: a pickle plus a JSON record with its sha256.

A pickle can run code when loaded, so an artifact is unpickled only when its
bytes hash to the sha256 recorded for it (in its record, and in the study
database when the caller passes the expected value).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from predictors.models import Predictor
from search_space import InputError
from supernet.checkpoint import atomic_write

ARTIFACT_VERSION = 1


class ArtifactError(InputError):
    """A predictor artifact that is missing, altered or of another kind."""


def save_predictor(predictor: Predictor, path: str | Path, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    path = Path(path)
    data = pickle.dumps(predictor, protocol=pickle.HIGHEST_PROTOCOL)
    record = {"version": ARTIFACT_VERSION, "kind": type(predictor).__name__, "chosen": predictor.chosen_,
              "n_train": predictor.n_train_, "cv_scores": predictor.cv_scores_,
              "sha256": hashlib.sha256(data).hexdigest(), **(metadata or {})}
    atomic_write(path, lambda f: f.write(data))
    atomic_write(path.with_name(path.name + ".json"),
                 lambda f: f.write(json.dumps(record, indent=2, sort_keys=True).encode()))
    return record


def load_predictor(path: str | Path, expected_sha256: str | None = None) -> tuple[Predictor, dict[str, Any]]:
    path = Path(path)
    try:
        data = path.read_bytes()
        record = json.loads(path.with_name(path.name + ".json").read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"predictor {path}: {Path(exc.filename).name} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"predictor {path}: unreadable ({exc})") from None
    actual = hashlib.sha256(data).hexdigest()
    wanted = expected_sha256 or record.get("sha256")
    if actual != record.get("sha256") or actual != wanted:
        raise ArtifactError(f"predictor {path}: sha256 {actual[:12]} does not match the recorded "
                            f"{str(wanted)[:12]}; refusing to unpickle it")
    if record.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"predictor {path}: artifact version {record.get('version')} is not {ARTIFACT_VERSION}")
    predictor = pickle.loads(data)  # noqa: S301 - the bytes match the recorded hash
    if not isinstance(predictor, Predictor):
        raise ArtifactError(f"predictor {path}: holds a {type(predictor).__name__}, not a predictor")
    return predictor, record
