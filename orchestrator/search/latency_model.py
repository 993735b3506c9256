"""The latency predictor a search ranks unmeasured archs with, fitted on the target's unflagged measurements.

A predictor stored in the study database for the same measurements is refitted from its stored choice
(data, never code: see `predictors.persist`); otherwise every candidate is cross-validated and the result
stored, so a resumed search predicts exactly what the uninterrupted one did.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from orchestrator.config import StudyConfig
from orchestrator.storage.latency import latency_dataset
from orchestrator.storage.predictor_store import StoredPredictor, latest_predictor, store_predictor
from orchestrator.storage.schema import StorageError, connect
from predictors.features import latency_features
from predictors.models import LatencyPredictor
from predictors.persist import STATE_VERSION, predictor_from_state, predictor_state, state_bytes
from predictors.target import HardwareTarget
from supernet.task_spec import TaskSpec
from supernet.tasks import load_task

MIN_MEASUREMENTS = 10  # unflagged measurements a latency predictor is fitted on, at least


def fit_latency_predictor(engine, config: StudyConfig, task: TaskSpec, target: HardwareTarget) -> LatencyPredictor:
    archs, latency, flagged = latency_dataset(engine, target)
    archs, latency = [a for a, f in zip(archs, flagged, strict=True) if not f], latency[~flagged]
    stored = latest_predictor(engine, config.study, "latency", target.name, len(archs), STATE_VERSION)
    X = latency_features(config.space, task, target, archs)
    if stored is not None:
        model = _read(stored, target)
        if np.array_equal(model.X_train_, X) and np.array_equal(model.y_train_, latency):
            return model
    model = LatencyPredictor(random_state=config.seed).fit(X, latency)
    store_predictor(engine, config.study, "latency", target.name, STATE_VERSION, len(archs), model.chosen_,
                    model.cv_scores_, state_bytes(predictor_state(model)))
    return model


def described(model: LatencyPredictor, target: HardwareTarget) -> str:
    scores = model.cv_scores_[model.chosen_]
    return (f"latency predictor for {target.name}: {model.chosen_}, cross-validated error {scores['mape']:.2f}% "
            f"(MAPE), Kendall tau {scores['kendall_tau']:.3f}, on {model.n_train_} measurements")


def latency_predictor_report(config: StudyConfig) -> str:
    """`elastiq measure`'s last line: the predictor fitted on the target's dataset (stored, so the search
    starts from it) and its cross-validated error, or why none is fitted yet."""
    target = config.target.to_target()
    engine = connect(config.storage, create=False)
    try:
        _, _, flagged = latency_dataset(engine, target)
        usable = int((~flagged).sum())
        if usable < MIN_MEASUREMENTS:
            return (f"latency predictor for {target.name}: not fitted ({usable} unflagged measurements, "
                    f"{MIN_MEASUREMENTS} needed; `elastiq measure` again measures the flagged ones)")
        model = fit_latency_predictor(engine, config, load_task(config.task.name, config.seed,
                                                                config.task.options).spec, target)
    finally:
        engine.dispose()
    return described(model, target)


def _read(stored: StoredPredictor, target: HardwareTarget) -> LatencyPredictor:
    where = f"stored latency predictor of {target.name!r} (row {stored.id})"
    if hashlib.sha256(stored.artifact).hexdigest() != stored.sha256:
        raise StorageError(f"{where} does not match its sha256")
    try:
        state = json.loads(stored.artifact)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise StorageError(f"{where} is not a predictor's JSON state; refused") from None
    predictor = predictor_from_state(state, where)
    if not isinstance(predictor, LatencyPredictor):
        raise StorageError(f"{where} holds a {type(predictor).__name__}, not a latency predictor")
    return predictor
