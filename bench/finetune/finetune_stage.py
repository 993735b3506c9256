"""The fine-tuning stage on the MNIST-1D front: early stopping against training every candidate.

1. One study (a search with the local executor on the trained MNIST-1D supernet),
   fine-tuned four times side by side in this run, each a run of its own: (a)
   every candidate to the full budget, (b) ASHA, (c) learning-curve
   extrapolation by the PFN, (d) by the parametric families. Wall time of each,
   steps trained, the fine-tuned front's hypervolume, and the share of the
   hypervolume that fine-tuning adds to the inherited front that each keeps.
   Goal: <= 0.4x the wall time of (a), hypervolume within 1%, 80% of the gain kept.
2. The exported fine-tuned front (`elastiq export` of run (c)) against the same
   archs trained alone from scratch for the same total budget (the supernet's
   steps plus the fine-tuning steps): test accuracy, goal within 1 point.
3. Calibration of the learning-curve extrapolators: the curves of a full run over
   up to 40 archs, each cut after 2 .. rungs-1 rungs, scored as
   `bench/finetune/curve_calibration.py` scores them (PFN beside families: the share of
   finals inside the 90% interval, goal 85-95%; the final's log-likelihood).

    .venv/bin/elastiq train-supernet -c configs/mnist1d.yaml --set supernet.checkpoint=runs/bench/mnist1d-supernet.pt
    .venv/bin/elastiq measure -c configs/mnist1d.yaml --set storage=sqlite:///runs/bench/mnist1d.db \
        --set supernet.checkpoint=runs/bench/mnist1d-supernet.pt
    .venv/bin/python bench/finetune/finetune_stage.py --config configs/mnist1d.yaml \
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

from bench.finetune.curves import current_run_curves, score
from orchestrator.cli import main
from orchestrator.config import load_study_config
from orchestrator.delivery.status import study_status
from orchestrator.finetune.stage import FinetuneStage
from search_space import Arch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import TrainSettings, evaluate, train_standalone

ROOT = Path(__file__).resolve().parents[2]
# each a run of its own (its settings are in its key): the lc runs differ in what extrapolates the curves
SCHEDULERS = {"full": {"scheduler": "full"}, "asha": {"scheduler": "asha"}, "lc": {"scheduler": "lc"},
              "lc-families": {"scheduler": "lc", "curve_model": "families"}}


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
    parser.add_argument("--schedulers", default=",".join(SCHEDULERS), help="which of the runs of part 1 (full is "
                        "needed: the others are compared with it)")
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
        runs = {name: run_stage(args.storage, args.study, overrides)
                for name, overrides in SCHEDULERS.items() if name in args.schedulers.split(",")}
        full = runs["full"]
        gain = full["hypervolume"] - full["inherited_hypervolume"]
        for run in runs.values():
            run["wall_ratio_to_full"] = run["wall_s"] / full["wall_s"]
            run["steps_ratio_to_full"] = run["steps_trained"] / full["steps_trained"]
            run["hypervolume_rel_diff_pct"] = 100 * (run["hypervolume"] - full["hypervolume"]) / full["hypervolume"]
            run["gain_kept"] = (run["hypervolume"] - run["inherited_hypervolume"]) / gain if gain > 0 else None
        results["schedulers"] = runs
        print(json.dumps({k: {m: v[m] for m in ("wall_s", "wall_ratio_to_full", "steps_ratio_to_full",
                                                 "hypervolume_rel_diff_pct", "gain_kept", "stopped")}
                          for k, v in runs.items()}), flush=True)
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
            "models": compared, "exported": len(manifest["models"]), "curve_model": config.finetune.curve_model,
            "within_1_point_share": float(np.mean([abs(c["delta_points"]) <= 1 or c["delta_points"] > 0
                                                   for c in compared])) if compared else None,
            "median_delta_points": float(np.median([c["delta_points"] for c in compared])) if compared else None}
        out.write_text(json.dumps(results, indent=2, sort_keys=True))
    if "calibration" in parts:
        run = run_stage(args.storage, args.study, {"scheduler": "full", "margin": 1.0, "max_candidates": 40})
        curves = current_run_curves(args.storage, args.study)
        results["calibration"] = {"run": {k: run[k] for k in ("wall_s", "candidates")}, "curves": len(curves),
                                  **score(curves, config.seed)}
        print(json.dumps(results["calibration"]), flush=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    main_bench()
