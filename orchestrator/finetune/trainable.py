"""A Ray Tune trial: one candidate fine-tuned a rung at a time, each rung reported and checkpointed.

The trial computes and reports; the driver records (DESIGN decision 2). Each
rung's checkpoint (weights, optimizer, schedule, batch generator, and the curve
so far) replaces the candidate's file atomically before the rung is reported.
A trial that finds its candidate's file continues from it: it first reports the
rungs the file holds again (`replayed`), so that the scheduler, new in a resumed
run, sees every curve whole, and the driver records what it had missed. A
candidate whose training ended in an earlier run only replays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from orchestrator.execution.evaluation import _loaded, threads_given
from search_space import Arch
from supernet.checkpoint import load_checkpoint, sha256_file, write_state
from supernet.device import resolve_device
from supernet.training.finetune import Finetuner, FinetuneSettings
from supernet.training.train import evaluate

log = logging.getLogger("elastiq.finetune")


def rung_end(rung: int, rungs: int, steps: int) -> int:
    """The step at which rung `rung` (1-based) of `rungs` reports."""
    return round(rung * steps / rungs)


def checkpoint_path(directory: str, run_key: str, arch_key: str) -> Path:
    return Path(directory) / run_key[:16] / f"{arch_key}.pt"


@functools.lru_cache(maxsize=2)
def _teacher(source: tuple, distill: str) -> torch.nn.Module | None:
    """The frozen teacher of the run: the supernet's largest arch, or the pretrained teacher its checkpoint
    keeps (the driver checked that it is there and fits)."""
    space, _, supernet = _loaded(*source)
    if distill == "none":
        return None
    teacher = supernet.extract(space.largest())
    if distill == "teacher":
        state, _ = load_checkpoint(source[0], expected_sha256=source[1])
        teacher.load_state_dict(state["teacher"])
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def read_candidate_checkpoint(path: Path, run_key: str, arch_key: str) -> dict[str, Any] | None:
    """The candidate's last rung state, or None when there is none usable (then it starts over)."""
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: the candidate starts over
        log.warning("fine-tuning checkpoint %s unreadable (%s): starting that candidate over", path,
                    type(exc).__name__)
        return None
    if not isinstance(state, dict) or state.get("run_key") != run_key or state.get("arch_key") != arch_key \
            or not state.get("history"):
        return None
    state["history"][-1]["checkpoint_sha256"] = sha256_file(path)  # a file cannot hold its own hash
    return state


def train_candidate(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune's function trainable. `config["candidate"]`: JSON of the candidate (arch, key, reference accuracy,
    cost, ended); `job`: the run's shared settings."""
    from ray import tune

    torch.set_num_threads(threads_given())
    candidate = json.loads(config["candidate"])
    source = tuple(job["source"])
    space, task, supernet = _loaded(*source)
    device = resolve_device(job["device"])
    arch = space.validate(Arch.from_json(candidate["arch"]))
    settings: FinetuneSettings = job["settings"]
    rungs, key = job["rungs"], candidate["arch_key"]
    path = checkpoint_path(job["directory"], job["run_key"], key)

    def report(entry: dict[str, Any], replayed: bool) -> None:
        tune.report({**entry, "arch_key": key, "cost": candidate["cost"], "replayed": replayed,
                     "margin": entry["accuracy"] - candidate["reference_accuracy"]})

    model = supernet.extract(arch)
    finetuner = Finetuner(model, task, settings, seed=_seed(job["seed"], key), device=device,
                          teacher=_teacher(source, job["distill"]))
    state = read_candidate_checkpoint(path, job["run_key"], key)
    history: list[dict[str, Any]] = []
    if state is not None:
        finetuner.restore(state)
        history = list(state["history"])
        for entry in history:
            report(entry, replayed=True)
    if candidate["ended"] is not None:
        return
    for rung in range(len(history) + 1, rungs + 1):
        started = time.perf_counter()
        finetuner.train(rung_end(rung, rungs, settings.steps) - finetuner.step)
        accuracy = evaluate(model, None, task, "val")
        entry = {"rung": rung, "steps": finetuner.step, "accuracy": accuracy,
                 "seconds": time.perf_counter() - started, "checkpoint": str(path)}
        saved = {**finetuner.state(), "run_key": job["run_key"], "arch_key": key,
                 "history": history + [{**entry, "checkpoint_sha256": ""}]}
        entry["checkpoint_sha256"] = write_state(path, saved)
        history.append(entry)
        report(entry, replayed=False)


def _seed(seed: int, arch_key: str) -> int:
    """Each candidate's own batch order, fixed by the study's seed."""
    return int(hashlib.sha256(f"{seed}:{arch_key}".encode()).hexdigest()[:8], 16)
