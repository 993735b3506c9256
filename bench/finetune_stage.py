"""The fine-tuning stage on the MNIST-1D front: early stopping against training every candidate.

1. One study (a search with the local executor on the trained MNIST-1D supernet),
   fine-tuned three times side by side in this run, each a run of its own: (a)
   every candidate to the full budget, (b) ASHA, (c) learning-curve
   extrapolation. Wall time of each, steps trained, and the fine-tuned front's
   hypervolume. Goal: (b) or (c) at <= 0.4x the wall time of (a), hypervolume
   within 1%.
2. The exported fine-tuned front (`elastiq export` of run (c)) against the same
   archs trained alone from scratch for the same total budget (the supernet's
   steps plus the fine-tuning steps): test accuracy, goal within 1 point.
3. Calibration of the learning-curve predictor: the curves of a full run over
   up to 40 archs, each cut after 2 .. rungs-1 rungs; the share of final
   accuracies inside the predicted 90% interval (goal 85-95%). The predictor
   has no fitted parameters (its noise floor comes from the validation split's
   size), so every curve is held out.

    .venv/bin/elastiq train-supernet -c configs/mnist1d.yaml --set supernet.checkpoint=runs/bench/mnist1d-supernet.pt
    .venv/bin/elastiq measure -c configs/mnist1d.yaml --set storage=sqlite:///runs/bench/mnist1d.db \
        --set supernet.checkpoint=runs/bench/mnist1d-supernet.pt
    .venv/bin/python bench/finetune_stage.py --config configs/mnist1d.yaml \
        --checkpoint runs/bench/mnist1d-supernet.pt --storage sqlite:///runs/bench/mnist1d.db [--cost macs]

With `--cost macs` the front is accuracy against MACs, and no latency dataset is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.cli import main
from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.finetune.stage import FinetuneStage
from orchestrator.storage.finetuning import load_run
from orchestrator.storage.schema import connect
from predictors.learning_curve import CurveExtrapolator
from search_space import Arch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.train import TrainSettings, evaluate, train_standalone

ROOT = Path(__file__).resolve().parent.parent


def run_stage(storage: str, study: str, overrides: dict) -> dict:
    started = time.perf_counter()
    stage = FinetuneStage(storage, study, overrides)
    summary = stage.run()
    seconds = time.perf_counter() - started
    status = study_status(storage, study)["finetune"]
    print(summary, flush=True)
    return {"wall_s": seconds, "summary": summary, "hypervolume": status["hypervolume"],
            "inherited_hypervolume": status["inherited_hypervolume"], "steps_trained": status["steps_trained"],
            "steps_budget": status["steps_budget"], "candidates": status["candidates"],
            "finished": status["finished"], "stopped": status["stopped"], "front_size": status["front_size"],
            "run_key": status["run_key"], "front": status["front"]}


def curves_of(storage: str, study: str, key: str) -> list[list[float]]:
    engine = connect(storage, create=False)
    try:
        return [[r.accuracy for r in c.rungs] for c in load_run(engine, study, key).values() if c.rungs]
    finally:
        engine.dispose()


def calibration(curves: list[list[float]], rungs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    inside, by_prefix, widths = [], {}, []
    for curve in curves:
        if len(curve) < rungs:
            continue
        for k in range(2, rungs):
            e = CurveExtrapolator().fit(np.arange(1, k + 1), curve[:k]).predict(rungs, rng)  # as the stopper fits
            hit = bool(e.lower <= curve[-1] <= e.upper)
            inside.append(hit)
            by_prefix.setdefault(k, []).append(hit)
            widths.append(e.upper - e.lower)
    return {"predictions": len(inside), "curves": sum(len(c) >= rungs for c in curves),
            "coverage_90": float(np.mean(inside)) if inside else None,
            "coverage_by_rungs_seen": {k: float(np.mean(v)) for k, v in by_prefix.items()},
            "median_interval_width_points": float(np.median(widths) * 100) if widths else None}


def trained_alone(config, arch_dict: dict, steps: int, seed: int) -> float:
    task = load_task(config.task.name, config.seed, config.task.options)
    arch = config.space.validate(Arch.from_dict(arch_dict))
    model = Supernet(config.space, task.spec, seed=seed).extract(arch)
    settings = TrainSettings(steps=steps, batch_size=config.supernet.batch_size, lr=config.supernet.lr,
                             weight_decay=config.supernet.weight_decay, warmup_steps=config.supernet.warmup_steps)
    torch.manual_seed(seed)
    train_standalone(model, task, settings, seed=seed)
    return evaluate(model.eval(), None, task, "test")


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "configs/mnist1d.yaml"))
    parser.add_argument("--checkpoint", default=str(ROOT / "runs/bench/mnist1d-supernet.pt"))
    parser.add_argument("--storage", default=f"sqlite:///{ROOT / 'runs/bench/mnist1d.db'}")
    parser.add_argument("--study", default="mnist1d-finetune")
    parser.add_argument("--evaluations", type=int, default=64)
    parser.add_argument("--parts", default="schedulers,export,calibration")
    parser.add_argument("--cost", default="latency_ms", choices=["latency_ms", "macs", "params"],
                        help="the front's cost objective (macs or params: no latency dataset needed)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/finetune_stage.json"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    overrides = {"study": args.study, "storage": args.storage, "supernet.checkpoint": args.checkpoint,
                 "search.executor": "local", "search.evaluations": args.evaluations}
    if args.cost != "latency_ms":
        overrides.update({"objectives": {"accuracy": "maximize", args.cost: "minimize"}, "constraints": []})
    config = load_study_config(args.config, overrides)
    sets = [f"--set={k}={json.dumps(v)}" for k, v in overrides.items()]
    assert main(["search", "-c", args.config, *sets, "--no-progress"]) == 0
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["settings"] = {"finetune": config.finetune.model_dump(), "supernet_steps": config.supernet.steps,
                           "evaluations": args.evaluations, "study": args.study, "cost": args.cost}
    if "schedulers" in parts:
        runs = {name: run_stage(args.storage, args.study, {"scheduler": name}) for name in ("full", "asha", "lc")}
        full = runs["full"]
        for run in runs.values():
            run["wall_ratio_to_full"] = run["wall_s"] / full["wall_s"]
            run["steps_ratio_to_full"] = run["steps_trained"] / full["steps_trained"]
            run["hypervolume_rel_diff_pct"] = 100 * (run["hypervolume"] - full["hypervolume"]) / full["hypervolume"]
        results["schedulers"] = runs
        print(json.dumps({k: {m: v[m] for m in ("wall_s", "wall_ratio_to_full", "steps_ratio_to_full",
                                                 "hypervolume_rel_diff_pct")} for k, v in runs.items()}), flush=True)
        out.write_text(json.dumps(results, indent=2, sort_keys=True))  # each part kept as soon as it is measured
    if "export" in parts:
        FinetuneStage(args.storage, args.study, {"scheduler": "lc"}).run()  # the current run: lc
        models = ROOT / "runs/bench/finetune-models"
        shutil.rmtree(models, ignore_errors=True)
        assert main(["export", "--storage", args.storage, "--study", args.study, "--out", str(models)]) == 0
        manifest = json.loads((models / "manifest.json").read_text())
        compared = []
        for entry in manifest["models"]:
            metrics = json.loads((models / entry["dir"] / "metrics.json").read_text())
            if metrics["weights"] != "fine-tuned":
                continue
            alone = trained_alone(config, metrics["arch"], config.supernet.steps + config.finetune.steps, config.seed)
            compared.append({"trial": entry["trial"], "exported_test": metrics["accuracy_test"],
                             "exported_test_simulated": metrics["accuracy_test_simulated"], "alone_test": alone,
                             "delta_points": 100 * (metrics["accuracy_test"] - alone)})
            print(compared[-1], flush=True)
        results["export_vs_alone"] = {
            "models": compared, "exported": len(manifest["models"]),
            "within_1_point_share": float(np.mean([abs(c["delta_points"]) <= 1 or c["delta_points"] > 0
                                                   for c in compared])) if compared else None,
            "median_delta_points": float(np.median([c["delta_points"] for c in compared])) if compared else None}
        out.write_text(json.dumps(results, indent=2, sort_keys=True))
    if "calibration" in parts:
        run = run_stage(args.storage, args.study, {"scheduler": "full", "margin": 1.0, "max_candidates": 40})
        curves = curves_of(args.storage, args.study, run["run_key"])
        results["calibration"] = {"run": {k: run[k] for k in ("wall_s", "candidates")},
                                  **calibration(curves, config.finetune.rungs, config.seed)}
        print(json.dumps(results["calibration"]), flush=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main_bench()
