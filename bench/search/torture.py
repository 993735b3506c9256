"""Crash torture: SIGKILL the search driver (and supernet training) at seeded kill points, resume, check.

Each run is a fresh `elastiq search` process armed to SIGKILL itself at a kill
point drawn from a seeded generator: a phase of its work and an occurrence in
it (the n-th arch it starts to evaluate, the n-th statement that writes to the
database, which lands inside an open transaction). Kill points count progress,
not seconds, so the same seed kills at the same places on a fast or a slow
machine. At the end of a study killed `--kills` times, compared with an
uninterrupted run of the same config and seed:

- no completed evaluation was ever lost (the completed set only grows);
- no arch was evaluated twice (completed trials have distinct arch keys);
- no trial is left RUNNING;
- the completed evaluations, hence the front, equal the uninterrupted run's.

Supernet training is tortured the same way (killed at its n-th optimizer step
or as it replaces its n-th checkpoint file), resumed, and compared with an
uninterrupted run weight for weight.

    .venv/bin/python bench/search/torture.py --config STUDY.yaml --kills 10 [--seed 0]

`tests/orchestrator/test_torture.py` runs it in a short form on the tiny space.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]

SEARCH_PHASES = {"evaluate": (1, 4), "write": (1, 60)}  # phase: range of the occurrence drawn
TRAINING_PHASES = {"step": (1, 30), "checkpoint": (1, 4)}


def arm(phase: str, occurrence: int, pause_in: str | None = None) -> None:
    """Make this process SIGKILL itself at the `occurrence`-th event of `phase` (counted in the
    main thread only: the lease's heartbeat thread beats on the clock, not on progress). With
    `pause_in`, it pauses there instead: it writes `paused` in that folder and goes on once
    someone has written `go` beside it (to break something under it at that very moment)."""
    count = [0]

    def tick() -> None:
        if threading.current_thread() is threading.main_thread():
            count[0] += 1
            if count[0] == occurrence and pause_in is None:
                os.kill(os.getpid(), signal.SIGKILL)
            elif count[0] == occurrence:
                (Path(pause_in) / "paused").write_text(str(os.getpid()))
                while not (Path(pause_in) / "go").exists():
                    time.sleep(0.05)

    if phase == "evaluate":
        import orchestrator.execution.executors as executors

        evaluate = executors.evaluate_arch

        def evaluate_then_maybe_die(job):
            tick()
            return evaluate(job)

        executors.evaluate_arch = evaluate_then_maybe_die
    elif phase == "write":
        from orchestrator.storage.schema import after_every_write

        after_every_write(tick)  # the statement ran; its transaction is still open
    elif phase == "step":
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        register_optimizer_step_pre_hook(lambda *_: tick())
    elif phase == "checkpoint":
        replace = os.replace

        def replace_or_die(*args, **kwargs):
            tick()  # the new file is written whole, not yet in place
            return replace(*args, **kwargs)

        os.replace = replace_or_die
    else:
        raise ValueError(f"unknown kill phase {phase!r}")


def elastiq_command(*args: str, kill_at: tuple | None = None) -> list[str]:
    """`elastiq ARGS` in a fresh Python, armed with `arm(*kill_at)` if given."""
    armed = f"sys.path.insert(0, {str(ROOT)!r}); import bench.search.torture as torture; torture.arm{kill_at!r}; " \
        if kill_at else ""
    return [sys.executable, "-c", f"import sys; {armed}from orchestrator.cli import main; sys.exit(main())", *args]


def _run_armed(command: list[str]) -> bool:
    """Run `command`; True if it died at its kill point, False if it finished first."""
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if run.returncode == -signal.SIGKILL:
        return True
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command[3:])} failed: {run.stderr.decode()[-2000:]}")
    return False


def _draw(phases: dict[str, tuple[int, int]], rng: np.random.Generator) -> tuple[str, int]:
    phase = sorted(phases)[int(rng.integers(len(phases)))]
    low, high = phases[phase]
    return phase, int(rng.integers(low, high + 1))


def _completed(storage: str, study: str) -> dict[int, tuple]:
    import optuna
    from optuna.trial import TrialState

    if study not in optuna.get_all_study_names(storage):
        return {}
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return {t.number: (t.user_attrs.get("arch_key"), tuple(t.values or ()), t.state.name) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING)}


def torture_search(config: Path, kills: int, rng: np.random.Generator) -> dict:
    data = yaml.safe_load(config.read_text())
    storage, study = data["storage"], data["study"]
    search = ("search", "-c", str(config), "--no-progress", "--executor", "local")
    done_kills, history = 0, []
    complete_so_far: set[tuple[int, str]] = set()
    while done_kills < kills:
        kill_at = _draw(SEARCH_PHASES, rng)
        killed = _run_armed(elastiq_command(*search, kill_at=kill_at))
        state = _completed(storage, study)
        complete = {(n, key) for n, (key, _, s) in state.items() if s == "COMPLETE"}
        lost = complete_so_far - complete
        if lost:
            raise AssertionError(f"completed evaluations lost after a kill: {sorted(lost)[:5]}")
        complete_so_far = complete
        history.append({"kill_at": list(kill_at), "killed": killed, "complete": len(complete),
                        "running": sum(s == "RUNNING" for _, _, s in state.values())})
        if not killed:
            break  # the study finished before the kill point: nothing left to interrupt
        done_kills += 1
    subprocess.run(elastiq_command(*search), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    tortured = _completed(storage, study)
    clean_name = f"{study}-uninterrupted"
    subprocess.run(elastiq_command(*search, "--set", f"study={clean_name}"), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
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


def torture_training(config: Path, kills: int, rng: np.random.Generator, workdir: Path) -> dict:
    import torch

    data = yaml.safe_load(config.read_text())
    results, history = {}, []
    for name, kill_count in (("tortured", kills), ("uninterrupted", 0)):
        checkpoint = workdir / f"train-{name}.pt"
        train = ("train-supernet", "-c", str(config), "--set", f"supernet.checkpoint={checkpoint}", "--no-progress")
        done = 0
        while done < kill_count:
            kill_at = _draw(TRAINING_PHASES, rng)
            killed = _run_armed(elastiq_command(*train, kill_at=kill_at))
            history.append({"kill_at": list(kill_at), "killed": killed})
            if not killed:
                break
            done += 1
        subprocess.run(elastiq_command(*train), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        results[name] = (done, torch.load(checkpoint, weights_only=True)["model"])
    kills_done, tortured = results["tortured"]
    _, clean = results["uninterrupted"]
    return {"kills": kills_done, "runs": history, "steps": data["supernet"]["steps"],
            "same_weights_as_uninterrupted": all(torch.equal(tortured[k], clean[k]) for k in clean)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study config whose supernet is trained and target measured")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--training-config", default=None, help="also torture supernet training on this config")
    parser.add_argument("--out", default=str(ROOT / "bench/results/torture.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    summary = {"search": torture_search(Path(args.config), args.kills, rng)}
    if args.training_config:
        summary["training"] = torture_training(Path(args.training_config), args.kills, rng, Path(args.out).parent)
    summary["seconds"] = time.perf_counter() - started
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
