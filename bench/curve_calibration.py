"""Calibration of the learning-curve extrapolators on real fine-tuning curves: the PFN beside the parametric
families, by rungs seen.

The curves are every rung of full fine-tuning runs (`elastiq finetune --scheduler full`), read from their
studies' databases: each `--run STORAGE_URL STUDY` takes that study's current run (`STUDY@KEY`: the run
whose key starts with KEY, as `elastiq status` shows it). Every curve is cut after
1 .. R-1 of its R rungs and its final value predicted from the prefix, as the `lc` scheduler predicts it:
from the rungs alone, and from the rungs after the candidate's inherited accuracy (`+start`: the search's,
before its first fine-tuning step). Neither extrapolator was fitted to these curves: the PFN learned the
prior only, so every curve is held out. (One choice was made after seeing some of them: the prior's noise is
centred on a validation split's binomial spread, e^-5, after a network trained with LC-PFN's e^-4 put 100% of
the first 20 curves' finals inside its 90% interval.) Reported per variant and per rungs seen: the share of
finals inside the central 90% interval (goal 85-95%), the mean log-likelihood of the final, the median
interval width, and the inference time per curve (a fit and the interval); the headline figures are over
2 .. R-1 rungs seen, the predictions every variant makes.

The curves in bench/results/curve_calibration.json: MNIST-1D's, from the full run of 40 candidates that
`bench/finetune_stage.py ... --parts calibration` starts (34 had finished when it was stopped); the pretrained
example's, from a full run on a copy of `make example-minilm`'s database (10 of 12 had finished):

    .venv/bin/elastiq finetune --storage sqlite:///runs/bench/minilm-curves.db --study minilm-manpages \\
        --scheduler full --set rungs=6 --set max_candidates=12 --set margin=1.0

    .venv/bin/python bench/curve_calibration.py --run sqlite:///runs/bench/mnist1d.db mnist1d-finetune@f5a54538 \\
        --run sqlite:///runs/bench/minilm-curves.db minilm-manpages@2b4dfba8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from orchestrator.storage.finetuning import load_run
from orchestrator.storage.schema import connect
from predictors.curve_pfn.extrapolator import PFNExtrapolator
from predictors.learning_curve import CurveExtrapolator

ROOT = Path(__file__).resolve().parent.parent
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
            with engine.connect() as connection:  # a bench reads the table directly: the product never needs to
                keys = {row[0] for row in connection.execute(text(
                    "SELECT DISTINCT run_key FROM elastiq_finetune_candidates WHERE study = :study"), {"study": study})}
            key = next(k for k in keys if k.startswith(prefix))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, action="append", metavar=("STORAGE", "STUDY"), required=True)
    parser.add_argument("--pfn", default=None, help="a folder of PFN weights (default: the shipped ones)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/curve_calibration.json"))
    args = parser.parse_args()
    PFN_WEIGHTS[0] = args.pfn
    results = {"sets": {}, "runs": args.run}
    everything = []
    for storage, study in args.run:
        curves = current_run_curves(storage, study)
        everything += curves
        results["sets"][study] = {"curves": len(curves), "rungs": sorted({len(c["rungs"]) for c in curves}),
                                  **score(curves), "raw_curves": curves}
        print(study, json.dumps({k: v for k, v in results["sets"][study].items() if k != "raw_curves"}), flush=True)
    results["all"] = {"curves": len(everything), **score(everything)}
    print("all", json.dumps(results["all"]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
