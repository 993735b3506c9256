"""The one place that reaches into Optuna's private API.

Optuna has no public way to open a trial with fixed params in one insert, to
read a trial by its id, to reach a study's SQL engine, or to overwrite a
trial's stored constraint; elastiq needs the first three at scale (100,000
trials) and the last after a crash. Benchmarks also build studies of that
size here, in bulk through Optuna's SQLAlchemy models (`add_completed_trials`). The names used here (`Study._storage`,
`Study._study_id`, `Trial._trial_id`, the RDB storage's `engine` behind its
cache's `_backend`, the `constraints:` system attribute) may change in any
Optuna release: this module is what to update, and
`tests/test_import_direction.py` checks that nothing else uses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.storages import BaseStorage


def storage_of(study: optuna.Study) -> tuple[BaseStorage, int]:
    """The study's storage object and the study's id in it."""
    return study._storage, study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's id in its storage (its `number` counts within the study only)."""
    return trial._trial_id


def engine_of(study: optuna.Study):
    """The SQLAlchemy engine under an RDB-stored study (Optuna wraps it in a cache)."""
    storage, _ = storage_of(study)
    return getattr(storage, "_backend", storage).engine


def set_constraint(trial: optuna.Trial, key: str, violation: float) -> None:
    """The constraint value Optuna's samplers read. `Trial.set_constraint` keeps (and warns about) a
    value set before, which a trial run again after a crash may carry: the new value is written over it."""
    storage, _ = storage_of(trial.study)
    attr = f"constraints:{key}"  # how Optuna names it among the trial's system attributes
    if attr in storage.get_trial_system_attrs(trial_id(trial)):
        storage.set_trial_system_attr(trial_id(trial), attr, float(violation))
    else:
        trial.set_constraint(key, violation)


@dataclass(frozen=True)
class SyntheticTrial:
    params: dict[str, Any]  # by parameter name, as the study's distributions declare them
    values: tuple[float, ...]  # one per objective
    user_attrs: dict[str, Any]


def add_completed_trials(storage: str, study_name: str, distributions: dict, count: int,
                         make: Callable[[int], SyntheticTrial], chunk: int = 5000) -> None:
    """Completed trials up to `count` in the study (`make(number)` gives each), inserted in bulk into Optuna's
    own tables through its SQLAlchemy models."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, func, insert, select

    engine = create_engine(storage)
    as_json = {name: distribution_to_json(d) for name, d in distributions.items()}
    try:
        with engine.begin() as connection:
            study_id = connection.execute(select(models.StudyModel.study_id).where(
                models.StudyModel.study_name == study_name)).scalar_one()
            have = connection.execute(select(func.count()).select_from(models.TrialModel).where(
                models.TrialModel.study_id == study_id)).scalar_one()
            next_id = (connection.execute(select(func.max(models.TrialModel.trial_id))).scalar() or 0) + 1
            now = datetime.now()
            for begin in range(have, count, chunk):
                rows: dict[str, list] = {"trials": [], "params": [], "values": [], "attrs": []}
                for number in range(begin, min(begin + chunk, count)):
                    trial, made = next_id + number - have, make(number)
                    rows["trials"].append({"trial_id": trial, "number": number, "study_id": study_id,
                                           "state": "COMPLETE", "datetime_start": now, "datetime_complete": now})
                    rows["params"] += [{"trial_id": trial, "param_name": name, "distribution_json": as_json[name],
                                        "param_value": distributions[name].to_internal_repr(value)}
                                       for name, value in made.params.items()]
                    rows["values"] += [{"trial_id": trial, "objective": objective, "value": value,
                                        "value_type": "FINITE"} for objective, value in enumerate(made.values)]
                    rows["attrs"] += [{"trial_id": trial, "key": k, "value_json": json.dumps(v)}
                                      for k, v in made.user_attrs.items()]
                for model, key in ((models.TrialModel, "trials"), (models.TrialParamModel, "params"),
                                   (models.TrialValueModel, "values"), (models.TrialUserAttributeModel, "attrs")):
                    connection.execute(insert(model), rows[key])
    finally:
        engine.dispose()
