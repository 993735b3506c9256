"""Predictors stored as data, never as code.

A fitted predictor is stored as plain JSON: its constructor parameters, the
candidate that cross-validation chose with every candidate's CV scores, and the
rows it was fitted on. Loading checks every field, then refits the chosen
candidate on those rows, which gives the same model (every candidate is
deterministic for its `random_state`). Nothing in a file or a database row is
unpickled or imported, so whoever can write one can at worst make a load fail.
Refitting the chosen candidate alone skips the cross-validation over all of
them, which is most of a fit's time.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from predictors.models import CANDIDATES, AccuracyPredictor, LatencyPredictor, Predictor
from search_space import InputError
from supernet.checkpoint import atomic_write

STATE_VERSION = 2  # 1 was a pickle: never read
_KINDS: dict[str, type[Predictor]] = {cls.__name__: cls for cls in (Predictor, LatencyPredictor, AccuracyPredictor)}
_SCORES = ("mape", "rmse", "kendall_tau", "spearman")
_MAX_ROWS, _MAX_FEATURES = 1_000_000, 10_000


class ArtifactError(InputError):
    """A stored predictor that is missing, altered, malformed or of another kind."""


def predictor_state(predictor: Predictor) -> dict[str, Any]:
    """The fitted predictor as plain data (see the module docstring)."""
    params = predictor.get_params()
    params["candidates"] = list(params["candidates"])
    return {"version": STATE_VERSION, "kind": type(predictor).__name__, "params": params,
            "chosen": predictor.chosen_, "cv_scores": predictor.cv_scores_,
            "X": predictor.X_train_.tolist(), "y": predictor.y_train_.tolist()}


def state_bytes(state: dict[str, Any]) -> bytes:
    """Canonical JSON (floats written exactly), the form that is hashed and stored."""
    return json.dumps(state, sort_keys=True, allow_nan=True).encode()


def predictor_from_state(state: Any, source: str = "predictor") -> Predictor:
    """The predictor that `state` describes, refitted; ArtifactError naming the field otherwise."""
    def bad(message: str) -> ArtifactError:
        return ArtifactError(f"{source}: {message}")

    if not isinstance(state, dict):
        raise bad(f"expected a mapping, got {type(state).__name__}")
    expected = {"version", "kind", "params", "chosen", "cv_scores", "X", "y"}
    if set(state) != expected:
        raise bad(f"fields {sorted(map(str, state))} are not {sorted(expected)}")
    if state["version"] != STATE_VERSION or isinstance(state["version"], bool):
        raise bad(f"version {state['version']!r} is not {STATE_VERSION}")
    cls = _KINDS.get(state["kind"]) if isinstance(state["kind"], str) else None
    if cls is None:
        raise bad(f"kind {state['kind']!r} is not one of {sorted(_KINDS)}")
    params = _params(state["params"], cls, bad)
    chosen = state["chosen"]
    if chosen not in params["candidates"]:
        raise bad(f"chosen {chosen!r} is not among the candidates {list(params['candidates'])}")
    cv_scores = _cv_scores(state["cv_scores"], params["candidates"], bad)
    X, y = _rows(state["X"], state["y"], bad)
    try:
        predictor = cls(**{**params, "candidates": (chosen,)}).fit(X, y)
    except ValueError as exc:
        raise bad(f"cannot be refitted ({exc})") from None
    predictor.set_params(candidates=params["candidates"])
    predictor.cv_scores_ = cv_scores
    return predictor


def _params(params: Any, cls: type[Predictor], bad) -> dict[str, Any]:
    names = set(cls().get_params())
    if not isinstance(params, dict) or set(params) != names:
        raise bad(f"params must name exactly {sorted(names)}")
    candidates = params["candidates"]
    if not isinstance(candidates, list) or not candidates or len(set(map(str, candidates))) != len(candidates) \
            or not all(isinstance(c, str) and c in CANDIDATES for c in candidates):
        raise bad(f"params.candidates must be distinct names from {list(CANDIDATES)}")
    integers = {"cv": (2, 100), "random_state": (0, 2**32 - 1), "gbm_trees": (1, 10_000)}
    for name, (low, high) in integers.items():
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"params.{name} must be an integer in [{low}, {high}], got {value!r}")
    if not isinstance(params["log_target"], bool):
        raise bad("params.log_target must be true or false")
    if params["select_by"] not in ("mape", "rmse", "kendall_tau"):
        raise bad("params.select_by must be mape, rmse or kendall_tau")
    return {**params, "candidates": tuple(candidates)}


def _cv_scores(cv_scores: Any, candidates: tuple[str, ...], bad) -> dict[str, dict[str, float]]:
    if not isinstance(cv_scores, dict) or set(cv_scores) != set(candidates):
        raise bad("cv_scores must hold one entry per candidate")
    for name, entry in cv_scores.items():
        if not isinstance(entry, dict) or set(entry) != set(_SCORES) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry.values()):
            raise bad(f"cv_scores.{name} must hold the numbers {list(_SCORES)}")
    return {name: {k: float(v) for k, v in entry.items()} for name, entry in cv_scores.items()}


def _rows(X: Any, y: Any, bad) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(X, list) or not isinstance(y, list) or not 0 < len(X) == len(y) <= _MAX_ROWS:
        raise bad(f"X and y must be lists of the same length, 1 to {_MAX_ROWS:,} rows")
    width = len(X[0]) if isinstance(X[0], list) else -1
    if not 0 < width <= _MAX_FEATURES:
        raise bad(f"X must be a list of rows of 1 to {_MAX_FEATURES:,} numbers")
    for row in X:
        if not isinstance(row, list) or len(row) != width or not all(_finite(v) for v in row):
            raise bad(f"X must be a list of rows of {width} finite numbers")
    if not all(_finite(v) for v in y):
        raise bad("y must be a list of finite numbers")
    return np.asarray(X, dtype=float), np.asarray(y, dtype=float)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def save_predictor(predictor: Predictor, path: str | Path, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the predictor as one JSON file holding its state, its sha256 and `metadata`."""
    state = predictor_state(predictor)
    record = {"kind": state["kind"], "chosen": predictor.chosen_, "n_train": predictor.n_train_,
              "cv_scores": predictor.cv_scores_, "sha256": hashlib.sha256(state_bytes(state)).hexdigest(),
              **(metadata or {})}
    document = {"elastiq_predictor": STATE_VERSION, "record": record, "state": state}
    atomic_write(Path(path), lambda f: f.write(json.dumps(document, indent=1, sort_keys=True).encode()))
    return record


def load_predictor(path: str | Path, expected_sha256: str | None = None) -> tuple[Predictor, dict[str, Any]]:
    """(predictor, record) of a file written by `save_predictor`, after checking its sha256 and every field."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"predictor {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"predictor {path}: not a predictor file ({type(exc).__name__})") from None
    if not isinstance(document, dict) or document.get("elastiq_predictor") != STATE_VERSION \
            or not isinstance(document.get("record"), dict) or "state" not in document:
        raise ArtifactError(f"predictor {path}: not an elastiq predictor file of version {STATE_VERSION}")
    record, state = document["record"], document["state"]
    actual = hashlib.sha256(state_bytes(state)).hexdigest() if isinstance(state, dict) else ""
    wanted = expected_sha256 or record.get("sha256")
    if actual != record.get("sha256") or actual != wanted:
        raise ArtifactError(f"predictor {path}: sha256 {actual[:12]} does not match the recorded {str(wanted)[:12]}")
    return predictor_from_state(state, f"predictor {path}"), record
