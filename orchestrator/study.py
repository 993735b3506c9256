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

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from orchestrator.config import StudyConfig, config_as_dict, study_config_from_dict
from orchestrator.db import StorageError, connect, masked
from search_space import Arch, InputError

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG_ATTR = "elastiq_config"
SUPERNET_ATTR = "elastiq_supernet_sha256"
REFERENCE_ATTR = "elastiq_reference_point"
# config sections a continued study may change: where it runs and how long
_MAY_CHANGE = {"storage", "ray", "supernet"}
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
    return optuna.load_study(study_name=name, storage=storage) if name in names else None


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
    study = optuna.create_study(study_name=config.study, storage=storage,
                                directions=list(config.objectives.values()))
    with warnings.catch_warnings():  # experimental in Optuna, and only a label for the dashboard
        warnings.simplefilter("ignore")
        study.set_metric_names(list(config.objectives))
    study.set_user_attr(CONFIG_ATTR, json.dumps(config_as_dict(config), sort_keys=True))
    study.set_user_attr(SUPERNET_ATTR, supernet_sha256)
    study.set_user_attr(REFERENCE_ATTR, reference)
    return study


@dataclass(frozen=True)
class Evaluation:
    trial: int
    arch: Arch
    metrics: dict[str, float]
    feasible: bool


def evaluations(study: optuna.Study) -> list[Evaluation]:
    """Completed trials in trial order."""
    return [Evaluation(t.number, Arch.from_json(t.user_attrs["arch"]), t.user_attrs["metrics"],
                       bool(t.user_attrs.get("feasible", True)))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def interrupted(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
