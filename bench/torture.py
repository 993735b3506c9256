"""Crash torture: kill -9 the search driver at random moments, resume each time, then check.

At the end of a study killed `--kills` times (each run started as a fresh
`elastiq search` process and killed after a random delay drawn from a seeded
generator), compared with an uninterrupted run of the same config and seed:

- no completed evaluation was ever lost (the completed set only grows);
- no arch was evaluated twice (completed trials have distinct arch keys);
- no trial is left RUNNING;
- the completed evaluations, hence the front, equal the uninterrupted run's.

The same is done for supernet training: killed at random moments, resumed, and
compared with an uninterrupted run weight for weight.

    .venv/bin/python bench/torture.py --config STUDY.yaml --kills 10 [--seed 0]

`tests/orchestrator/test_torture.py` runs it in a short form on the tiny space.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _elastiq(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())", *args]


def _run_and_kill(command: list[str], delay: float) -> bool:
    """Start `command`, kill -9 it after `delay` s; False if it finished first."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return True
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed: {process.stderr.read().decode()[-2000:]}")
    return False


def _completed(storage: str, study: str) -> dict[int, tuple]:
    import optuna
    from optuna.trial import TrialState

    if study not in optuna.get_all_study_names(storage):
        return {}
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return {t.number: (t.user_attrs.get("arch_key"), tuple(t.values or ()), t.state.name) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING)}


def torture_search(config: Path, kills: int, rng: np.random.Generator, delays: tuple[float, float]) -> dict:
    data = yaml.safe_load(config.read_text())
    storage, study = data["storage"], data["study"]
    done_kills, history = 0, []
    complete_so_far: set[tuple[int, str]] = set()
    while done_kills < kills:
        killed = _run_and_kill(_elastiq("search", "-c", str(config), "--no-progress", "--executor", "local"),
                               float(rng.uniform(*delays)))
        state = _completed(storage, study)
        complete = {(n, key) for n, (key, _, s) in state.items() if s == "COMPLETE"}
        lost = complete_so_far - complete
        if lost:
            raise AssertionError(f"completed evaluations lost after a kill: {sorted(lost)[:5]}")
        complete_so_far = complete
        history.append({"killed": killed, "complete": len(complete),
                        "running": sum(s == "RUNNING" for _, _, s in state.values())})
        if not killed:
            break  # the study finished before the next kill: nothing left to interrupt
        done_kills += 1
    subprocess.run(_elastiq("search", "-c", str(config), "--no-progress", "--executor", "local"), cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    tortured = _completed(storage, study)
    clean_name = f"{study}-uninterrupted"
    subprocess.run(_elastiq("search", "-c", str(config), "--no-progress", "--executor", "local",
                            "--set", f"study={clean_name}"), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    clean = _completed(storage, clean_name)
    keys = [key for key, _, state in tortured.values() if state == "COMPLETE"]
    return {
        "kills": done_kills, "runs": history,
        "complete": len(keys), "budget": data["search"]["evaluations"],
        "running_left": sum(state == "RUNNING" for _, _, state in tortured.values()),
        "archs_evaluated_twice": len(keys) - len(set(keys)),
        "same_as_uninterrupted": sorted(v[:2] for v in tortured.values() if v[2] == "COMPLETE")
        == sorted(v[:2] for v in clean.values() if v[2] == "COMPLETE"),
    }


def torture_training(config: Path, kills: int, rng: np.random.Generator, delays: tuple[float, float],
                     workdir: Path) -> dict:
    import torch

    data = yaml.safe_load(config.read_text())
    results = {}
    for name, kill_count in (("tortured", kills), ("uninterrupted", 0)):
        checkpoint = workdir / f"train-{name}.pt"
        overrides = ["--set", f"supernet.checkpoint={checkpoint}", "--no-progress"]
        command = _elastiq("train-supernet", "-c", str(config), *overrides)
        done = 0
        while done < kill_count and _run_and_kill(command, float(rng.uniform(*delays))):
            done += 1
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        results[name] = (done, torch.load(checkpoint, weights_only=True)["model"])
    kills_done, tortured = results["tortured"]
    _, clean = results["uninterrupted"]
    return {"kills": kills_done, "steps": data["supernet"]["steps"],
            "same_weights_as_uninterrupted": all(torch.equal(tortured[k], clean[k]) for k in clean)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study config whose supernet is trained and target measured")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-delay", type=float, default=2.0)
    parser.add_argument("--max-delay", type=float, default=9.0)
    parser.add_argument("--training-config", default=None, help="also torture supernet training on this config")
    parser.add_argument("--out", default=str(ROOT / "bench/results/torture.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    summary = {"search": torture_search(Path(args.config), args.kills, rng, (args.min_delay, args.max_delay))}
    if args.training_config:
        summary["training"] = torture_training(Path(args.training_config), args.kills, rng,
                                               (args.min_delay, args.max_delay), Path(args.out).parent)
    summary["seconds"] = time.perf_counter() - started
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
