"""The one place that reaches into Optuna's private API.

Optuna has no public way to open a trial with fixed params in one insert, to
read a trial by its id, to reach a study's SQL engine, or to overwrite a
trial's stored constraint; elastiq needs the first three at scale (100,000
trials) and the last after a crash. The names used here (`Study._storage`,
`Study._study_id`, `Trial._trial_id`, the RDB storage's `engine` behind its
cache's `_backend`, the `constraints:` system attribute) may change in any
Optuna release: this module is what to update, and
`tests/test_import_direction.py` checks that nothing else uses them.
"""

from __future__ import annotations

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
