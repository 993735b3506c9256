"""Studies: creation, compatibility with the stored study, and reading them back.

The study's resolved config, objectives, reference point and supernet hash
live in the Optuna study's user attributes, so `resume` needs nothing but the
database. Trials carry the arch JSON, its key and all metrics as user attrs,
so `optuna trials` and optuna-dashboard show them.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from orchestrator.config import StudyConfig, config_as_dict, study_config_from_dict
from orchestrator.db import StorageError, connect, masked
from search_space import Arch, InputError

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG_ATTR = "elastiq_config"
SUPERNET_ATTR = "elastiq_supernet_sha256"
REFERENCE_ATTR = "elastiq_reference_point"
# config sections a continued study may change: where it runs and how long
_MAY_CHANGE = {"storage", "ray", "supernet", "measure"}
_SEARCH_MAY_CHANGE = {"evaluations", "executor"}


class StudyMismatch(InputError):
    """A study config that disagrees with the stored study."""


def database_exists(url: str) -> bool:
    """False for a SQLite file that is not there (so a read does not create it)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - connect() reports malformed URLs
        return True
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return os.path.exists(parsed.database)
    return True


def optuna_storage(url: str, create: bool) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(url, skip_table_creation=not create,
                                          engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # noqa: BLE001 - any failure here is the URL's or the server's
        raise StorageError(f"storage {masked(url)}: cannot open ({type(exc).__name__})") from None


def find_study(url: str, name: str) -> optuna.Study | None:
    """The study if it exists; reads only (a missing SQLite file is not created)."""
    if not database_exists(url):
        return None
    engine = connect(url, create=False)
    has_optuna_tables = "studies" in inspect(engine).get_table_names()
    engine.dispose()
    if not has_optuna_tables:
        return None
    storage = optuna_storage(url, create=False)
    names = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage, sampler=_fixed_params_sampler()) \
        if name in names else None


def _fixed_params_sampler() -> optuna.samplers.BaseSampler:
    # the driver's own handle only opens trials with fixed params; Optuna's default sampler (TPE)
    # would read every trial of the study at each ask, seconds on a large study
    return optuna.samplers.RandomSampler(seed=0)


def require_study(url: str, name: str) -> optuna.Study:
    study = find_study(url, name)
    if study is None:
        raise StudyMismatch(f"no study named {name!r} in storage {masked(url)}")
    if CONFIG_ATTR not in study.user_attrs:
        raise StudyMismatch(f"study {name!r} in {masked(url)} is not an elastiq study")
    return study


def stored_config(study: optuna.Study, storage_url: str) -> StudyConfig:
    data = json.loads(study.user_attrs[CONFIG_ATTR])
    data["storage"] = storage_url
    return study_config_from_dict(data, source=f"study {study.study_name!r}")


def check_compatible(config: StudyConfig, study: optuna.Study) -> None:
    stored = json.loads(study.user_attrs[CONFIG_ATTR])
    given = json.loads(json.dumps(config_as_dict(config)))
    for key in sorted(set(stored) | set(given)):
        if key in _MAY_CHANGE:
            continue
        old, new = stored.get(key), given.get(key)
        if key == "search":
            old = {k: v for k, v in (old or {}).items() if k not in _SEARCH_MAY_CHANGE}
            new = {k: v for k, v in (new or {}).items() if k not in _SEARCH_MAY_CHANGE}
        if old != new:
            detail = _first_difference(old, new, key)
            raise StudyMismatch(f"the config disagrees with stored study {study.study_name!r}: {detail}; "
                                f"use another study name, or the stored config (elastiq resume)")


def _first_difference(old: Any, new: Any, path: str) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path} is {new!r} here but {old!r} in the study"


def create_study(config: StudyConfig, supernet_sha256: str, reference: list[float]) -> optuna.Study:
    storage = optuna_storage(config.storage, create=True)
    study = optuna.create_study(study_name=config.study, storage=storage, sampler=_fixed_params_sampler(),
                                directions=list(config.objectives.values()))
    with warnings.catch_warnings():  # experimental in Optuna, and only a label for the dashboard
        warnings.simplefilter("ignore")
        study.set_metric_names(list(config.objectives))
    study.set_user_attr(CONFIG_ATTR, json.dumps(config_as_dict(config), sort_keys=True))
    study.set_user_attr(SUPERNET_ATTR, supernet_sha256)
    study.set_user_attr(REFERENCE_ATTR, reference)
    return study


class Evaluation:
    """A completed trial. Its arch and metrics are parsed when first asked for: a study
    of 100,000 trials is read in a second when most of them are only counted or ranked."""

    __slots__ = ("trial", "key", "feasible", "_arch", "_metrics")

    def __init__(self, trial: int, arch: Arch | str, metrics: dict[str, float] | str, feasible: bool,
                 key: str | None = None):
        self.trial, self.feasible = trial, feasible
        self._arch, self._metrics = arch, metrics  # parsed objects, or their stored JSON
        self.key = key or self.arch.key

    @property
    def arch(self) -> Arch:
        if isinstance(self._arch, str):  # Optuna stores the attr JSON-encoded: the arch JSON as a JSON string
            self._arch = Arch.from_json(json.loads(self._arch))
        return self._arch

    @property
    def metrics(self) -> dict[str, float]:
        if isinstance(self._metrics, str):
            self._metrics = json.loads(self._metrics)
        return self._metrics

    def __repr__(self) -> str:
        return f"Evaluation(trial={self.trial}, key={self.key!r}, feasible={self.feasible})"


def _pivot_sql(attrs: tuple[str, ...], objectives: int = 0) -> str:
    """One row per completed trial: its number, the named user attrs and objective values
    as columns. Pivoted by the database, so 100,000 trials come back as 100,000 rows."""
    columns = [f"MAX(CASE WHEN a.key = '{key}' THEN a.value_json END)" for key in attrs]
    if objectives:
        columns += [f"(SELECT v.value FROM trial_values v WHERE v.trial_id = t.trial_id AND v.objective = {k})"
                    for k in range(objectives)]
    return (f"SELECT t.number, {', '.join(columns)} FROM trials t JOIN studies s ON s.study_id = t.study_id "
            f"LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            f"AND a.key IN ({', '.join(repr(k) for k in attrs)}) "
            f"WHERE s.study_name = :name AND t.state = 'COMPLETE' GROUP BY t.trial_id, t.number ORDER BY t.number")


def study_engine(study: optuna.Study):
    storage = study._storage
    return getattr(storage, "_backend", storage).engine


def evaluations(study: optuna.Study) -> list[Evaluation]:
    """Completed trials in trial order. One query on Optuna's tables: loading 100,000
    trials through Optuna's API takes minutes, this about a second."""
    return evaluations_with_values(study, 0)[0]


def evaluations_with_values(study: optuna.Study, objectives: int) -> tuple[list[Evaluation], np.ndarray]:
    """The completed trials and their objective values (n, objectives) row for row, by one query."""
    query = text(_pivot_sql(("arch", "arch_key", "metrics", "feasible"), objectives))
    with study_engine(study).connect() as connection:
        rows = [row for row in connection.execute(query, {"name": study.study_name}).fetchall()
                if row[1] is not None and row[3] is not None]
    done = [Evaluation(row[0], row[1], row[3], row[4] != "false", key=json.loads(row[2]) if row[2] else None)
            for row in rows]
    return done, np.array([row[5:] for row in rows], dtype=float).reshape(len(rows), objectives)


def completed_count(study: optuna.Study) -> int:
    return trial_counts(study)["complete"]


@dataclass(frozen=True)
class ObjectiveTable:
    """The objective values of completed trials as arrays, read from Optuna's numeric
    tables without parsing any JSON: what status, the front and the hypervolume need."""

    trials: np.ndarray  # (n,) trial numbers
    values: np.ndarray  # (n, objectives), in the study's directions
    feasible: np.ndarray  # (n,) bool


def objective_table(study: optuna.Study, objectives: int) -> ObjectiveTable:
    query = text(_pivot_sql(("feasible",), objectives))
    with study_engine(study).connect() as connection:
        rows = connection.execute(query, {"name": study.study_name}).fetchall()
    if not rows:
        return ObjectiveTable(np.zeros(0, dtype=int), np.zeros((0, objectives)), np.zeros(0, dtype=bool))
    trials = np.array([row[0] for row in rows], dtype=int)
    feasible = np.array([row[1] != "false" for row in rows], dtype=bool)
    values = np.array([row[2:] for row in rows], dtype=float).reshape(len(rows), objectives)  # None -> nan
    complete = ~np.isnan(values).any(axis=1)
    return ObjectiveTable(trials[complete], values[complete], feasible[complete])


def arch_key_of(study: optuna.Study, trial: int) -> str | None:
    query = text("SELECT a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                 "WHERE s.study_name = :name AND t.number = :number AND a.key = 'arch_key'")
    with study_engine(study).connect() as connection:
        value = connection.execute(query, {"name": study.study_name, "number": trial}).scalar()
    return None if value is None else json.loads(value)


def unique_archs(study: optuna.Study) -> int:
    query = text("SELECT COUNT(DISTINCT a.value_json) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                 "WHERE s.study_name = :name AND t.state = 'COMPLETE' AND a.key = 'arch_key'")
    with study_engine(study).connect() as connection:
        return int(connection.execute(query, {"name": study.study_name}).scalar() or 0)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    query = text("SELECT t.state, COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "WHERE s.study_name = :name GROUP BY t.state")
    with study_engine(study).connect() as connection:
        found = {str(state).split(".")[-1].lower(): n for state, n in connection.execute(query,
                                                                                         {"name": study.study_name})}
    return {state.name.lower(): found.get(state.name.lower(), 0) for state in TrialState}


def interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING or WAITING, found by one query (not by loading every trial)."""
    query = text("SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "WHERE s.study_name = :name AND t.state IN ('RUNNING', 'WAITING') ORDER BY t.number")
    with study_engine(study).connect() as connection:
        ids = [row[0] for row in connection.execute(query, {"name": study.study_name})]
    return [study._storage.get_trial(trial_id) for trial_id in ids]
