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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from orchestrator.config import StudyConfig, config_as_dict, study_config_from_dict
from orchestrator.storage.optuna_private import engine_of, storage_of
from orchestrator.storage.schema import StorageError, connect, masked
from search_space import Arch, InputError

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG_ATTR = "elastiq_config"
SUPERNET_ATTR = "elastiq_supernet_sha256"
REFERENCE_ATTR = "elastiq_reference_point"
# config sections a continued study may change: where it runs, how long, and its later fine-tuning
_MAY_CHANGE = {"storage", "ray", "supernet", "measure", "finetune"}
_SEARCH_MAY_CHANGE = {"evaluations", "executor"}


class StudyMismatch(InputError):
    """A study config that disagrees with the stored study."""


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite database URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return parsed.database
    return None


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
    objectives, names = data.get("objectives"), study.metric_names
    if isinstance(objectives, dict) and names is not None and sorted(names) == sorted(objectives):
        # in the order of the trials' values (the config is stored with its keys sorted)
        data["objectives"] = {name: objectives[name] for name in names}
    return study_config_from_dict(data, source=f"study {study.study_name!r}")


def check_compatible(config: StudyConfig, study: optuna.Study) -> None:
    # read back through the config model: keys added since the study was created take their defaults
    stored = json.loads(json.dumps(config_as_dict(stored_config(study, config.storage))))
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


def record_budget(study: optuna.Study, evaluations: int) -> None:
    """A search that continues a study with a larger budget stores it, so that status and a later
    `elastiq resume` see the budget the study now runs to."""
    data = json.loads(study.user_attrs[CONFIG_ATTR])
    search = data.setdefault("search", {})
    if evaluations > search.get("evaluations", 0):
        search["evaluations"] = evaluations
        study.set_user_attr(CONFIG_ATTR, json.dumps(data, sort_keys=True))


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
    """A completed trial. Its arch and metrics are parsed when first asked for, and read
    then too when the evaluation came without them: a study of 100,000 trials is read in
    under a second when most of them are only counted or ranked."""

    __slots__ = ("trial", "key", "feasible", "_arch", "_metrics", "_details", "_trial_id")

    def __init__(self, trial: int, arch: Arch | str | None, metrics: dict[str, float] | str | None, feasible: bool,
                 key: str | None = None, details: Callable[[int], tuple[str, str]] | None = None,
                 trial_id: int | None = None):
        self.trial, self.feasible = trial, feasible
        self._arch, self._metrics = arch, metrics  # parsed objects, their stored JSON, or None: ask `details`
        self._details, self._trial_id = details, trial_id
        self.key = key or self.arch.key

    def _read_details(self) -> None:
        self._arch, self._metrics = self._details(self._trial_id)

    @property
    def arch(self) -> Arch:
        if self._arch is None:
            self._read_details()
        if isinstance(self._arch, str):  # Optuna stores the attr JSON-encoded: the arch JSON as a JSON string
            self._arch = Arch.from_json(json.loads(self._arch))
        return self._arch

    @property
    def metrics(self) -> dict[str, float]:
        if self._metrics is None:
            self._read_details()
        if isinstance(self._metrics, str):
            self._metrics = json.loads(self._metrics)
        return self._metrics

    def __repr__(self) -> str:
        return f"Evaluation(trial={self.trial}, key={self.key!r}, feasible={self.feasible})"


def _completed_sql(attrs: tuple[str, ...], objectives: int = 0) -> str:
    """One row per completed trial: its number and id, the named user attrs and the objective
    values as columns, one join per column on Optuna's (trial_id, key) and (trial_id, objective)
    indexes. A GROUP BY pivot of the same took three times as long on 100,000 trials."""
    joins = [f"LEFT JOIN trial_user_attributes a{i} ON a{i}.trial_id = t.trial_id AND a{i}.key = '{key}'"
             for i, key in enumerate(attrs)]
    joins += [f"LEFT JOIN trial_values v{k} ON v{k}.trial_id = t.trial_id AND v{k}.objective = {k}"
              for k in range(objectives)]
    columns = [f"a{i}.value_json" for i in range(len(attrs))] + [f"v{k}.value" for k in range(objectives)]
    return (f"SELECT t.number, t.trial_id, {', '.join(columns)} FROM trials t "
            f"JOIN studies s ON s.study_id = t.study_id {' '.join(joins)} "
            f"WHERE s.study_name = :name AND t.state = 'COMPLETE' ORDER BY t.number")


def _json_string(value_json: str) -> str:
    """A JSON-encoded string attr (an arch key: hex digits) decoded without the JSON parser,
    which costs a second per 100,000 trials."""
    if len(value_json) >= 2 and value_json[0] == value_json[-1] == '"' and "\\" not in value_json:
        return value_json[1:-1]
    return json.loads(value_json)


_PLACEHOLDER = {"qmark": "?", "numeric": ":1", "named": ":name", "format": "%s", "pyformat": "%(name)s"}


def _fetch_completed(study: optuna.Study, sql: str) -> list[tuple]:
    """The rows of `sql` (one `:name` parameter, the study's name) through the database driver
    itself: SQLAlchemy's row objects cost a third of the time on 100,000 rows."""
    engine = engine_of(study)
    style = engine.dialect.paramstyle
    sql = sql.replace(":name", _PLACEHOLDER[style])
    params = {"name": study.study_name} if style in ("named", "pyformat") else (study.study_name,)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        cursor.close()
    finally:
        connection.close()
    return rows


def evaluations(study: optuna.Study) -> list[Evaluation]:
    """Completed trials in trial order, with their archs and metrics. One query on Optuna's
    tables: loading 100,000 trials through Optuna's API takes minutes, this a few seconds."""
    rows = _fetch_completed(study, _completed_sql(("arch", "arch_key", "metrics", "feasible")))
    return [Evaluation(row[0], row[2], row[4], row[5] != "false", key=_json_string(row[3]) if row[3] else None)
            for row in rows if row[2] is not None and row[4] is not None]


def evaluations_with_values(study: optuna.Study, objectives: int) -> tuple[list[Evaluation], np.ndarray]:
    """The completed trials and their objective values (n, objectives) row for row, by one query
    that leaves out the archs and metrics: each is read when first asked for (a search asks for
    a few hundred)."""
    rows = [row for row in _fetch_completed(study, _completed_sql(("arch_key", "feasible"), objectives))
            if row[2] is not None and row[3] is not None]
    details = _DetailReader(study)
    done = [Evaluation(row[0], None, None, row[3] != "false", _json_string(row[2]), details, row[1]) for row in rows]
    return done, np.array([row[4:] for row in rows], dtype=float).reshape(len(rows), objectives)


class _DetailReader:
    """The arch and metrics JSON of one trial, by its id (an indexed lookup)."""

    QUERY = text("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :trial_id "
                 "AND key IN ('arch', 'metrics')")

    def __init__(self, study: optuna.Study):
        self.engine = engine_of(study)

    def __call__(self, trial_id: int) -> tuple[str, str]:
        with self.engine.connect() as connection:
            found = dict(connection.execute(self.QUERY, {"trial_id": trial_id}).fetchall())
        return found["arch"], found["metrics"]


def completed_keys(study: optuna.Study) -> set[str]:
    """The arch keys of the completed trials, by one query that reads nothing else."""
    return {_json_string(row[2]) for row in _fetch_completed(study, _completed_sql(("arch_key",))) if row[2]}


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
    rows = _fetch_completed(study, _completed_sql(("feasible",), objectives))
    if not rows:
        return ObjectiveTable(np.zeros(0, dtype=int), np.zeros((0, objectives)), np.zeros(0, dtype=bool))
    trials = np.array([row[0] for row in rows], dtype=int)
    feasible = np.array([row[2] != "false" for row in rows], dtype=bool)
    values = np.array([row[3:] for row in rows], dtype=float).reshape(len(rows), objectives)  # None -> nan
    complete = ~np.isnan(values).any(axis=1)
    return ObjectiveTable(trials[complete], values[complete], feasible[complete])


def arch_key_of(study: optuna.Study, trial: int) -> str | None:
    query = text("SELECT a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                 "WHERE s.study_name = :name AND t.number = :number AND a.key = 'arch_key'")
    with engine_of(study).connect() as connection:
        value = connection.execute(query, {"name": study.study_name, "number": trial}).scalar()
    return None if value is None else json.loads(value)


def unique_archs(study: optuna.Study) -> int:
    query = text("SELECT COUNT(DISTINCT a.value_json) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                 "WHERE s.study_name = :name AND t.state = 'COMPLETE' AND a.key = 'arch_key'")
    with engine_of(study).connect() as connection:
        return int(connection.execute(query, {"name": study.study_name}).scalar() or 0)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    query = text("SELECT t.state, COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "WHERE s.study_name = :name GROUP BY t.state")
    with engine_of(study).connect() as connection:
        found = {str(state).split(".")[-1].lower(): n for state, n in connection.execute(query,
                                                                                         {"name": study.study_name})}
    return {state.name.lower(): found.get(state.name.lower(), 0) for state in TrialState}


def interrupted(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING or WAITING, found by one query (not by loading every trial)."""
    query = text("SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id "
                 "WHERE s.study_name = :name AND t.state IN ('RUNNING', 'WAITING') ORDER BY t.number")
    with engine_of(study).connect() as connection:
        ids = [row[0] for row in connection.execute(query, {"name": study.study_name})]
    storage, _ = storage_of(study)
    return [storage.get_trial(trial_id) for trial_id in ids]
