"""`elastiq finetune`: the front's candidates trained as Ray Tune trials, stopped early by a scheduler.

Before anything is written: the study, its settings (`finetune` of the stored
config, with the command's overrides), a feasible front, the teacher, the
supernet checkpoint and where the weights go are all checked. Then, holding
the study's lease, the driver adds the run's candidates to the database and
runs one Tune experiment: a trial per candidate, cheapest first (the cheap
ones set the bar the costlier ones must clear), `ray.workers` at a time. A
callback records every rung as it arrives and how each candidate's training
ended. Run again after a crash, it continues: rungs recorded are not trained
again, and the scheduler sees every curve whole (see `trainable`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from tqdm import tqdm

from orchestrator.config import ConfigError, StudyConfig, config_as_dict, study_config_from_dict
from orchestrator.errors import FinetuneFailed
from orchestrator.execution.executors import check_ray_address
from orchestrator.finetune.candidates import Candidate, FinetuneError, choose_candidates
from orchestrator.finetune.results import finetuned_run, front_summary, study_reference, with_finetuned
from orchestrator.finetune.schedulers import curve_extrapolator, make_scheduler
from orchestrator.finetune.trainable import train_candidate
from orchestrator.search.objectives import Objectives
from orchestrator.storage.finetuning import (
    CandidateRecord,
    Rung,
    add_candidates,
    load_run,
    mark_ended,
    record_rung,
    run_key,
    set_current_run,
)
from orchestrator.storage.lease import Lease
from orchestrator.storage.schema import connect
from orchestrator.storage.study import SUPERNET_ATTR, evaluations, require_study, stored_config
from orchestrator.storage.supernets import supernet_checkpoint
from supernet.checkpoint import load_checkpoint
from supernet.device import resolve_device
from supernet.tasks import load_task, quality_metric
from supernet.training.train import check_layout

log = logging.getLogger("elastiq.finetune")


OVERRIDABLE = ("finetune", "ray")  # where the stage runs and how it trains; the rest is the study's


def settings_with(config: StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """The study config with overrides applied (`KEY` or `finetune.KEY`, and `ray.KEY`), validated like the file."""
    data = config_as_dict(config)
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        section = section or "finetune"
        if section not in OVERRIDABLE or not key:
            raise ConfigError(f"{dotted}: `elastiq finetune` overrides finetune.KEY and ray.KEY only (the rest is "
                              f"the stored study's)")
        data[section] = {**data[section], key: value}
    return study_config_from_dict(data, source=f"study {config.study!r}")


class FinetuneStage:
    def __init__(self, storage: str, study_name: str, overrides: dict[str, Any] | None = None,
                 progress: bool = False):
        self.storage, self.study_name, self.progress = storage, study_name, progress
        self.study = require_study(storage, study_name)
        self.config = settings_with(stored_config(self.study, storage), overrides or {})
        if quality_metric(self.config.task.name) != "accuracy":  # its candidates' rungs hold accuracies
            raise FinetuneError(f"study {study_name!r}: a {self.config.task.name} study's front is not fine-tuned "
                                f"yet (its models are scored by {quality_metric(self.config.task.name)})")
        self.settings = self.config.finetune
        self.objectives = Objectives.from_config(self.config.objectives, self.config.constraints)

    # ---- checks before anything is written ---------------------------------
    def _preflight(self, engine) -> tuple[list[Candidate], str, Any]:
        config, settings = self.config, self.settings
        if config.supernet.device == "cuda" and config.ray.gpus_per_worker == 0:
            raise ConfigError("supernet.device cuda: the Ray Tune trials get no GPU; set ray.gpus_per_worker")
        if config.supernet.device != "cuda":
            resolve_device(config.supernet.device)
        check_ray_address(config.ray.address)
        candidates = choose_candidates(evaluations(self.study), self.objectives, self.study_name, settings.margin,
                                       settings.max_candidates)
        task = load_task(config.task.name, config.seed, config.task.options)
        sha = self.study.user_attrs[SUPERNET_ATTR]
        checkpoint = self.checkpoint = supernet_checkpoint(engine, config.supernet.checkpoint, sha)
        state, record = load_checkpoint(checkpoint, config.space, task.name, expected_sha256=sha)
        check_layout(checkpoint, record, task)
        if settings.distill == "teacher":
            self._check_teacher(state, checkpoint, task)
        if settings.scheduler == "lc":
            curve_extrapolator(settings.curve_model, settings.curve_model_weights)  # refused here, not in Tune
        if settings.batch_size > len(task.split("train")[1]):
            raise FinetuneError(f"finetune.batch_size {settings.batch_size} is more than the task's "
                                f"{len(task.split('train')[1])} training samples")
        return candidates, sha, task

    def _check_teacher(self, state: dict, checkpoint: Path, task) -> None:
        if "teacher" not in state:
            raise FinetuneError(f"finetune.distill teacher: supernet checkpoint {checkpoint} holds no pretrained "
                                f"teacher (it was trained with supernet.teacher inplace); use distill largest")
        from supernet.model import Supernet

        largest = Supernet(self.config.space, task.spec).extract(self.config.space.largest())
        try:
            largest.load_state_dict(state["teacher"])
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise FinetuneError(f"finetune.distill teacher: the teacher in {checkpoint} does not match the "
                                f"supernet's largest arch ({str(exc).splitlines()[0][:160]})") from None

    def directory(self) -> Path:
        if self.settings.directory is not None:
            return Path(self.settings.directory).resolve()
        return self.checkpoint.parent / "finetuned"

    # ---- the run -----------------------------------------------------------
    def run(self) -> str:
        import ray

        from orchestrator.execution.executors import start_ray
        from orchestrator.execution.training import check_reachable_from_every_node

        engine = connect(self.storage)
        started, trained_now = time.perf_counter(), 0
        try:
            candidates, supernet_sha, task = self._preflight(engine)
            settings_data = self.settings.model_dump()
            key = run_key(self.study_name, settings_data, supernet_sha)
            known = load_run(engine, self.study_name, key)
            todo = [c for c in candidates if c.key not in known or known[c.key].ended is None]
            ray_started = False
            if todo:  # Ray, and a weights directory every node sees, before anything is written
                config = self.config
                ray_started = start_ray(config.ray.address,
                                        num_cpus=config.ray.workers * config.ray.cpus_per_worker + 1)
            try:
                if todo:
                    check_reachable_from_every_node(self.directory(), "finetune.directory")
                lease = Lease(engine, self.study_name).acquire()
                try:
                    set_current_run(self.study, key, settings_data)
                    add_candidates(engine, self.study_name, key, [(c.key, c.trial, c.metrics) for c in candidates])
                    if todo:
                        trained_now = self._tune(key, supernet_sha, candidates,
                                                 load_run(engine, self.study_name, key), task)
                finally:
                    lease.release()
            finally:
                if ray_started:
                    ray.shutdown()
            return self._summary(engine, key, trained_now, time.perf_counter() - started, bool(todo))
        finally:
            engine.dispose()

    def _tune(self, key: str, supernet_sha: str, candidates: list[Candidate], records: dict, task) -> int:
        """One Tune experiment over the candidates (Ray running); the steps it trained."""
        from ray import tune

        config, settings = self.config, self.settings
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
        workers, cpus, gpus = config.ray.workers, config.ray.cpus_per_worker, config.ray.gpus_per_worker
        tune_dir = tempfile.mkdtemp(prefix="elastiq-finetune-")
        recorder = None
        try:
            job = {"source": [str(self.checkpoint), supernet_sha,
                              json.dumps(config.space.to_dict(), sort_keys=True), config.task.name,
                              json.dumps(config.task.options, sort_keys=True), config.seed],
                   "device": config.supernet.device, "directory": str(self.directory()), "run_key": key,
                   "rungs": settings.rungs, "seed": config.seed, "distill": settings.distill,
                   "settings": settings.to_settings()}
            ordered = sorted(candidates, key=lambda c: (c.cost, c.trial))  # cheapest first
            grid = [json.dumps({"arch": c.arch.to_json(), "arch_key": c.key, "cost": c.cost,
                                "reference_accuracy": c.reference_accuracy, "ended": records[c.key].ended})
                    for c in ordered]
            recorder = RungRecorder(self.storage, self.study_name, key, settings.rungs,
                                    {c.key: c.trial for c in candidates}, progress=self.progress,
                                    records={c.key: records[c.key] for c in candidates})
            scheduler = make_scheduler(settings.scheduler, settings.rungs, settings.grace_rungs,
                                       settings.reduction_factor, settings.confidence, settings.min_gain,
                                       seed=config.seed, curve_model=settings.curve_model,
                                       curve_model_weights=settings.curve_model_weights,
                                       starts={c.key: c.metrics["accuracy"] for c in candidates})
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(train_candidate, job=job), {"cpu": cpus, "gpu": gpus}),
                param_space={"candidate": tune.grid_search(grid)},
                # a worker keeps its actor, and with it the loaded supernet and data, from one candidate to the next
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=workers, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=tune_dir, verbose=0, callbacks=[recorder],
                                          failure_config=tune.FailureConfig(max_failures=config.ray.retries)))
            log.info("fine-tuning %d candidate(s) of study %s (%s, %d steps in %d rungs) on %d Ray Tune worker(s)",
                     len(grid), self.study_name, settings.scheduler, settings.steps, settings.rungs, workers)
            results = tuner.fit()
            failed = [r.error for r in results if r.error is not None]
            if failed:
                raise FinetuneFailed(f"{len(failed)} candidate(s) of study {self.study_name!r} failed to fine-tune "
                                     f"({_error_line(failed[0])}); what was recorded is kept: run `elastiq finetune` "
                                     f"again to continue")
            return recorder.trained_steps
        finally:
            if recorder is not None:
                recorder.close()
            shutil.rmtree(tune_dir, ignore_errors=True)

    def _summary(self, engine, key: str, trained_now: int, seconds: float, ran: bool) -> str:
        run = finetuned_run(self.study, engine)
        counts = run.counts()
        done = evaluations(self.study)
        reference = study_reference(self.study)
        inherited = front_summary(done, self.objectives, reference)
        tuned = front_summary(with_finetuned(done, run, self.objectives), self.objectives, reference)
        budget = counts["candidates"] * self.settings.steps
        status = "" if ran else " (already complete)"
        trained = run.steps_trained()
        return (f"study {self.study_name}: fine-tuned {counts['candidates']} candidate(s) with "
                f"{self.settings.scheduler}{status}: {counts['finished']} finished, {counts['stopped']} stopped early, "
                f"{counts['unfinished']} unfinished; {trained} of {budget} steps trained ({trained / budget:.0%}), "
                f"{trained_now} this run; fine-tuned front {tuned['size']}, hypervolume {tuned['hypervolume']:.4g} "
                f"(inherited {inherited['hypervolume']:.4g}); {seconds:.0f} s this run")


def _error_line(error: BaseException) -> str:
    """A trial's error in one line: the last of its traceback text, which names the exception."""
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]


class RungRecorder(Callback):
    """A Tune callback on the driver: records each rung as it arrives, and how each candidate ended.
    (Tune pickles its callbacks with the experiment's state: the engine is made where it is used.)"""

    def __init__(self, storage: str, study: str, key: str, rungs: int, trials: dict[str, int],
                 progress: bool = False, records: dict[str, CandidateRecord] | None = None):
        self.storage, self.study, self.key, self.rungs, self.trials = storage, study, key, rungs, trials
        self.trained_steps = 0  # by this run (replayed rungs are not)
        self._steps_seen: dict[str, int] = {}
        self._engine = None
        # the bar counts rungs of the whole budget (every candidate to its last): a stopped candidate's rest is
        # done too; what an earlier run recorded is done before this one starts
        records = records or {}
        self._ended_before = {k for k, r in records.items() if r.ended is not None}
        self.ended = {kind: sum(r.ended == kind for r in records.values()) for kind in ("finished", "stopped")}
        self.best_margin: float | None = None
        self._shown = {k: rungs if r.ended is not None else len(r.rungs) for k, r in records.items()}
        self._bar = tqdm(total=len(trials) * rungs, initial=sum(self._shown.values()), desc=f"finetune {study}",
                         unit="rung", disable=not progress, dynamic_ncols=True)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_engine": None, "_bar": None}

    @property
    def engine(self):
        if self._engine is None:
            self._engine = connect(self.storage, create=False)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._bar is not None:
            self._bar.close()

    def _show(self, arch_key: str, rungs_done: int) -> None:
        advance = max(0, rungs_done - self._shown.get(arch_key, 0))
        self._shown[arch_key] = self._shown.get(arch_key, 0) + advance
        if self._bar is None:
            return
        self._bar.update(advance)
        margin = "-" if self.best_margin is None else f"{self.best_margin:+.4f}"
        self._bar.set_postfix_str(f"finished {self.ended['finished']}, stopped {self.ended['stopped']}, "
                                  f"best margin {margin}", refresh=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rung = Rung(int(result["rung"]), int(result["steps"]), float(result["accuracy"]), float(result["seconds"]),
                    str(result["checkpoint"]), str(result["checkpoint_sha256"]))
        record_rung(self.engine, self.study, self.key, result["arch_key"], rung)
        if not result.get("replayed"):
            self.trained_steps += rung.steps - self._steps_seen.get(trial.trial_id, 0)
        self._steps_seen[trial.trial_id] = rung.steps
        if "margin" in result:
            margin = float(result["margin"])
            self.best_margin = margin if self.best_margin is None else max(self.best_margin, margin)
        self._show(result["arch_key"], rung.rung)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if "rung" in result:
            ended = "finished" if int(result["rung"]) >= self.rungs else "stopped"
            mark_ended(self.engine, self.study, self.key, result["arch_key"], ended)
            if result["arch_key"] not in self._ended_before:
                self.ended[ended] += 1
                self._show(result["arch_key"], self.rungs)  # a stopped candidate's remaining rungs are not run
            log.info("trial %d (%s): %s at rung %d of %d, val accuracy %.4f", self.trials.get(result["arch_key"], -1),
                     result["arch_key"][:8], ended, int(result["rung"]), self.rungs, float(result["accuracy"]))
