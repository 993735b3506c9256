"""Real fine-tuning curves read from a study's database, and how well an extrapolator predicts their finals
(`bench/finetune/curve_calibration.py` reports it; `bench/finetune/finetune_stage.py` scores the curves of its runs)."""

from __future__ import annotations

import time

import numpy as np

from orchestrator.storage.finetuning import load_run, run_keys
from orchestrator.storage.schema import connect
from predictors.curve_pfn.extrapolator import PFNExtrapolator
from predictors.learning_curve import CurveExtrapolator

PFN_WEIGHTS: list[str | None] = [None]  # the shipped weights, unless --pfn names others
EXTRAPOLATORS = {"pfn": lambda: PFNExtrapolator(PFN_WEIGHTS[0], samples=200),
                 "families": lambda: CurveExtrapolator(samples=200)}
# with_start: the curve begins with the candidate's inherited accuracy (the search's, before any fine-tuning step)
VARIANTS = [(name, with_start) for name in EXTRAPOLATORS for with_start in (False, True)]


def current_run_curves(storage: str, study: str) -> list[dict]:
    """The whole curves (every rung reached) of the study's current fine-tuning run, or of the run whose key
    starts with KEY when `study` is STUDY@KEY, each with its start."""
    import optuna

    from orchestrator.storage.finetuning import RUN_ATTR

    study, _, prefix = study.partition("@")
    key = prefix or optuna.load_study(study_name=study, storage=storage).user_attrs[RUN_ATTR]["run_key"]
    engine = connect(storage, create=False)
    try:
        if prefix:
            key = next(k for k in run_keys(engine, study) if k.startswith(prefix))
        records = load_run(engine, study, key).values()
        return [{"start": c.metrics["accuracy"], "rungs": [r.accuracy for r in c.rungs]}
                for c in records if c.ended == "finished"]
    finally:
        engine.dispose()


def score(curves: list[dict], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = {variant: {} for variant in VARIANTS}
    seconds = {variant: [] for variant in VARIANTS}
    for curve in curves:
        values = curve["rungs"]
        rungs, final = len(values), values[-1]
        for seen in range(1, rungs):
            for name, with_start in VARIANTS:
                y = np.array(([curve["start"]] if with_start else []) + values[:seen])
                if len(y) < 2:
                    continue  # one point: no curve to extrapolate
                x, at = np.arange(1, len(y) + 1), rungs + int(with_start)
                started = time.perf_counter()
                fitted = EXTRAPOLATORS[name]().fit(x, y)
                e = fitted.predict(at, rng)
                seconds[name, with_start].append(time.perf_counter() - started)
                rows[name, with_start].setdefault(seen, []).append(
                    (e.lower <= final <= e.upper, fitted.log_density(at, final), e.upper - e.lower))
    out = {}
    for (name, with_start), by_seen in rows.items():
        # the headline: 2 .. R-1 rungs seen, the same predictions for every variant (`+start` can also
        # predict from 1 rung, shown by rungs seen)
        every = [r for seen, rs in by_seen.items() if seen >= 2 for r in rs]
        out[f"{name}{'+start' if with_start else ''}"] = {
            "coverage_90": float(np.mean([r[0] for r in every])),
            "mean_log_likelihood": float(np.mean([r[1] for r in every])),
            "median_interval_width_points": float(100 * np.median([r[2] for r in every])),
            "by_rungs_seen": {seen: {"coverage_90": float(np.mean([r[0] for r in rs])),
                                     "mean_log_likelihood": float(np.mean([r[1] for r in rs])),
                                     "median_interval_width_points": float(100 * np.median([r[2] for r in rs])),
                                     "predictions": len(rs)} for seen, rs in sorted(by_seen.items())},
            "predictions": len(every),
            "median_ms_per_curve": float(1000 * np.median(seconds[name, with_start]))}
    return out
