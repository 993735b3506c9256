"""`elastiq search` and `elastiq resume`: the driver loop of a study.

    propose a batch (strategy) -> evaluate (executor; cached evaluations are
    not run again) -> record results in the study -> hypervolume -> repeat

The driver alone writes the study. Each batch is recorded (`elastiq_batches`)
before its trials are opened and closed once they all are; after a crash, the
trials of the last batch that are not complete run again, themselves, before
anything new, and a batch whose trials were still being opened is failed and
proposed again from the same state (nothing of it was evaluated). So a resumed
search continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from orchestrator.config import StudyConfig
from orchestrator.execution.evaluation import EvalJob
from orchestrator.execution.executors import Executor, LocalExecutor, RayExecutor
from orchestrator.execution.measuring import beside_probes, measure_and_store
from orchestrator.search.front import front_and_hypervolume
from orchestrator.search.latency_model import described, fit_latency_predictor
from orchestrator.search.objectives import Objectives
from orchestrator.search.preflight import check_before_search
from orchestrator.search.strategies import SearchContext, ask_fixed, make_strategy
from orchestrator.storage.batches import close_batch, drop_batch, last_batch, open_batch
from orchestrator.storage.evaluation_cache import CacheKey, cache_metrics, cached_metrics
from orchestrator.storage.history import record_hypervolume
from orchestrator.storage.latency import register_target
from orchestrator.storage.lease import Lease
from orchestrator.storage.optuna_private import set_constraint, trial_id
from orchestrator.storage.schema import connect
from orchestrator.storage.study import (
    completed_count,
    completed_keys,
    create_study,
    evaluations_with_values,
    interrupted,
    record_budget,
)
from orchestrator.storage.supernets import register_supernet
from predictors.cost import cost_metrics
from predictors.features import latency_features
from predictors.measure import DriftCheck, LatencyMeasurement
from search_space import Arch, InputError
from search_space.optuna_map import arch_from_params, distributions

log = logging.getLogger("elastiq.search")
SPLIT = "val"  # the search ranks on val; test is kept for the exported models


@dataclass(frozen=True)
class SearchRun:
    """What one run of the search works with, opened once by `SearchDriver.run` and handed to each step."""

    engine: Any
    study: optuna.Study
    task: Any
    supernet_sha: str
    predictor: Any | None  # the latency predictor, where an objective or constraint needs latency
    executor: Executor


class SearchDriver:
    def __init__(self, config: StudyConfig, progress: bool = True, executor: Executor | None = None):
        self.config = config
        self.progress = progress
        self._executor = executor
        self.objectives = Objectives.from_config(config.objectives, config.constraints)
        self.target = config.target.to_target()
        self.search_seed = config.seed if config.search.seed is None else config.search.seed

    # ---- the loop ----------------------------------------------------------------
    def run(self) -> str:
        config = self.config
        task, supernet_sha, study = check_before_search(config, self.objectives, self.target)
        if study is not None and not interrupted(study):
            done = completed_count(study)
            if done >= config.search.evaluations:  # nothing to do: no predictor fitted, no Ray started
                hv, front_size = front_and_hypervolume(study, self.objectives)
                return (f"study {config.study}: {done} of {config.search.evaluations} evaluations, Pareto front "
                        f"{front_size}, hypervolume {hv:.4g} (already complete)")
        engine = connect(config.storage)
        register_supernet(engine, supernet_sha, Path(config.supernet.checkpoint).resolve(), config.space.hash,
                          task.name, config.supernet.steps)
        register_target(engine, self.target)
        predictor = fit_latency_predictor(engine, config, task.spec, self.target) \
            if self.objectives.needs_latency else None
        if predictor is not None:
            log.info("%s", described(predictor, self.target))
        if study is None:
            study = create_study(config, supernet_sha, self._reference_point(task, predictor))
        self.study = study
        lease = Lease(engine, config.study).acquire()
        record_budget(study, config.search.evaluations)  # held by the lease: no other driver writes it
        executor = self._executor or self._make_executor()
        try:
            summary = self._loop(SearchRun(engine, study, task, supernet_sha, predictor, executor))
        finally:
            if self._executor is None:
                executor.close()
            lease.release()
            engine.dispose()
        return summary

    def _make_executor(self) -> Executor:
        if self.config.search.executor == "local":
            return LocalExecutor()
        ray = self.config.ray
        return RayExecutor(ray.address, ray.workers, self.target.name, max_failures=ray.retries,
                           cpus_per_worker=ray.cpus_per_worker, gpus_per_worker=ray.gpus_per_worker)

    def _loop(self, run: SearchRun) -> str:
        config, engine, study = self.config, run.engine, run.study
        strategy = make_strategy(config.search.strategy)
        budget = config.search.evaluations
        reruns = self._recover(engine, study)
        done = completed_count(study)
        bar = tqdm(total=budget, initial=min(done, budget), desc=f"search {config.study}", unit="eval",
                   disable=not self.progress, dynamic_ncols=True)
        attempts = 0
        started = time.perf_counter()
        try:
            while done < budget and attempts < 3 * budget:
                count = min(config.search.batch_size, budget - done)
                if reruns:  # finish the interrupted batch first, exactly as it was
                    proposals, reruns = reruns, []
                else:
                    context = self._context(run)
                    rng = np.random.default_rng([self.search_seed, done])
                    batch = open_batch(engine, study.study_name)
                    proposals = strategy.propose(context, study, count, rng)
                    close_batch(engine, batch, [trial_id(trial) for _, trial in proposals])
                if not proposals:
                    log.info("the strategy has nothing new to propose: the space is exhausted")
                    break
                attempts += len(proposals)
                self._evaluate_and_record(run, proposals)
                done = completed_count(study)
                hv, front_size = self._record_hypervolume(engine, study, done)
                bar.n = min(done, budget)
                bar.set_postfix(hv=f"{hv:.4g}", pareto=front_size)
                bar.refresh()
        finally:
            bar.close()
        hv, front_size = front_and_hypervolume(study, self.objectives)
        return (f"study {config.study}: {done} of {budget} evaluations, Pareto front {front_size}, "
                f"hypervolume {hv:.4g} ({time.perf_counter() - started:.0f} s this run)")

    def _recover(self, engine, study: optuna.Study) -> list[tuple[Arch, optuna.Trial]]:
        """After a crash: the trials of the last batch that are not complete, to run again themselves
        (they stay RUNNING until then, so a crash in between loses nothing either). A batch whose
        trials were still being opened is failed and dropped, to be proposed again. Other trials left
        RUNNING or WAITING (by an elastiq before batches were recorded) fail, and their archs run again
        in new trials."""
        space = self.config.space
        last = last_batch(engine, study.study_name)
        opening = last is not None and last.trials is None
        members = last.trials if last is not None and not opening else frozenset()
        lost = interrupted(study)
        done_keys = completed_keys(study) if lost else set()
        reruns: list[tuple[Arch, optuna.Trial]] = []
        for frozen in lost:
            if frozen.state == TrialState.WAITING:  # enqueued but never asked: take it, to close it
                trial = study.ask(distributions(space))
            else:
                trial = optuna.trial.Trial(study, trial_id(frozen))
            try:
                arch = arch_from_params(space, dict(trial.params))
            except InputError:  # the crash came before its params were all set: nothing to run again
                arch = None
            fresh = arch is not None and arch.key not in done_keys and arch.key not in {a.key for a, _ in reruns}
            if fresh and trial_id(frozen) in members:
                reruns.append((arch, trial))  # the batch's own trial runs again
                continue
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            if fresh and not opening:
                reruns.append((arch, ask_fixed(study, space, arch)))
        if opening:
            drop_batch(engine, last.id)
            log.info("resuming: the batch being opened when the search stopped is proposed again")
        if reruns:
            log.info("resuming: %d interrupted trial(s) will run again", len(reruns))
        return reruns

    def _context(self, run: SearchRun) -> SearchContext:
        space, study, task, predictor = self.config.space, run.study, run.task, run.predictor
        # sorted by key: what the strategy sees does not depend on trial order (crashes reorder trials)
        done, values = evaluations_with_values(study, len(self.objectives.metrics))
        order = sorted(range(len(done)), key=lambda i: done[i].key)
        evaluated = [done[i] for i in order]
        values = values[order] * self.objectives.signs
        predict = None
        if predictor is not None:
            def predict(archs: list[Arch]):
                return predictor.predict(latency_features(space, task.spec, self.target, archs), return_std=True)
        return SearchContext(space=space, objectives=self.objectives, evaluated=evaluated, minimized=values,
                             exact_costs=lambda archs: [self._costs(task, a) for a in archs], predict_latency=predict)

    def _costs(self, task, arch: Arch) -> dict[str, float]:
        return cost_metrics(self.config.space, task.spec, arch, self.target)

    def _job(self, arch: Arch, supernet_sha: str) -> EvalJob:
        config = self.config
        return EvalJob(arch=arch.to_json(), checkpoint=str(Path(config.supernet.checkpoint).resolve()),
                       checkpoint_sha256=supernet_sha, space=json.dumps(config.space.to_dict(), sort_keys=True),
                       task=config.task.name, task_options=json.dumps(config.task.options, sort_keys=True),
                       seed=config.seed, split=SPLIT, finetune_steps=config.search.finetune_steps,
                       target=self.target, device=config.supernet.device)

    def _evaluate_and_record(self, run: SearchRun, proposals: list[tuple[Arch, optuna.Trial]]) -> None:
        cached, results, eval_nodes = self._evaluated(run, [arch for arch, _ in proposals])
        latencies = {}
        if self.config.search.measure_latency:
            evaluated = list({arch.key: arch for arch, _ in proposals if arch.key in cached}.values())
            latencies = self._measured_latencies(run, evaluated)
        predicted = self._predicted_latencies(run, [arch for arch, _ in proposals])
        study = run.study
        for arch, trial in proposals:
            trial.set_user_attr("arch", arch.to_json())
            trial.set_user_attr("arch_key", arch.key)
            if arch.key in eval_nodes:
                trial.set_user_attr("eval_node", eval_nodes[arch.key])
            if arch.key not in cached:
                trial.set_user_attr("error", str(results.get(arch.key, "no result"))[:500])
                study.tell(trial, state=TrialState.FAIL)
                continue
            metrics = {k: v for k, v in cached[arch.key].items() if k != "latency_measured_ms"}  # (older caches)
            latency = latencies.get(arch.key, {})
            for attr in ("measure_node", "latency_drift", "latency_raw_ms", "latency_refused"):
                if latency.get(attr) is not None:
                    trial.set_user_attr(attr, latency[attr])
            if "latency_ms" in latency:
                metrics["latency_measured_ms"] = latency["latency_ms"]
            if arch.key in predicted:
                metrics["latency_predicted_ms"], metrics["latency_predicted_std_ms"] = predicted[arch.key]
                metrics["latency_ms"] = metrics.get("latency_measured_ms", predicted[arch.key][0])
            violations = self.objectives.violations(metrics)
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("latency_source", "measured" if "latency_measured_ms" in metrics else "predicted")
            trial.set_user_attr("constraint_violations", violations)
            trial.set_user_attr("feasible", all(v <= 0 for v in violations))
            for constraint, violation in zip(self.config.constraints, violations, strict=True):
                set_constraint(trial, str(constraint), violation)
            study.tell(trial, self.objectives.values(metrics))

    def _evaluated(self, run: SearchRun, archs: list[Arch]) -> tuple[dict[str, dict], dict, dict[str, str]]:
        """The metrics of `archs` (arch key -> metrics), from the evaluation cache or evaluated now by the
        executor and cached; the executor's results (an Exception for a failed one) and where each ran."""
        cache_key = CacheKey(run.supernet_sha, SPLIT, self.target.name, self.config.search.finetune_steps)
        cached = cached_metrics(run.engine, cache_key, [arch.key for arch in archs])
        for arch in archs:  # cached before the cost model gave memory_mb: its costs are computed, not evaluated
            if arch.key in cached and "memory_mb" not in cached[arch.key]:
                cached[arch.key] = {**self._costs(run.task, arch), **cached[arch.key]}
        to_run = list({arch.key: arch for arch in archs if arch.key not in cached}.values())
        outcomes = run.executor.evaluate([self._job(a, run.supernet_sha) for a in to_run])
        results = dict(zip([a.key for a in to_run], outcomes, strict=True))
        # where each ran (a Ray node id, or "local") goes to the trial, not into the cached metrics
        eval_nodes = {key: r.pop("node", "local") for key, r in results.items() if isinstance(r, dict)}
        new = {arch.key: dict(results[arch.key]) for arch in to_run if not isinstance(results[arch.key], Exception)}
        cache_metrics(run.engine, cache_key, new)  # the cache first: a crash after it loses no work
        return {**cached, **new}, results, eval_nodes

    def _predicted_latencies(self, run: SearchRun, archs: list[Arch]) -> dict[str, tuple[float, float]]:
        """Arch key -> the latency predictor's (mean, std); empty without a predictor."""
        if run.predictor is None:
            return {}
        predicted = {}
        features = latency_features(self.config.space, run.task.spec, self.target, archs)
        for arch, row in zip(archs, features, strict=True):
            # one arch at a time: a row's prediction must not depend on what else is in the batch (BLAS
            # blocks by the batch's size), or a resumed batch would record other last digits
            mean, std = run.predictor.predict(row[None, :], return_std=True)
            predicted[arch.key] = (float(mean[0]), float(std[0]))
        return predicted

    def _measured_latencies(self, run: SearchRun, archs: list[Arch]) -> dict[str, dict]:
        """Latency on the dataset's scale of each of `archs`: from the target's stored measurements, or
        measured now beside drift probes and stored (unless the probes refuse the batch: then the
        batch keeps its predicted latency and each trial says why)."""
        config, node = self.config, {}

        def measure_batch(todo: list[Arch], probes, stored: int):
            outcome = run.executor.measure([self._job(a, run.supernet_sha) for a in todo],
                                       [(arch.to_json(), m.to_dict()) for arch, m in probes],
                                       config.measure.to_protocol(),
                                       seed=int(np.random.default_rng([self.search_seed, stored]).integers(2**31)))
            if isinstance(outcome, Exception):
                return None  # logged by the executor: the batch keeps its predicted latency
            node["id"] = outcome["node"]
            return [LatencyMeasurement(**m) for m in outcome["measurements"]], DriftCheck(**outcome["check"])

        measured = measure_and_store(run.engine, self.target, archs, beside_probes(measure_batch), source="search")
        now = set(measured.measured_now)
        found = {}
        for arch in archs:
            m = measured.latencies.get(arch.key)
            if m is not None:
                found[arch.key] = {"latency_ms": m.latency_ms} if arch.key not in now else {
                    "latency_ms": m.latency_ms, "latency_raw_ms": m.raw_latency_ms, "latency_drift": m.drift,
                    "measure_node": node["id"]}
            elif measured.refused is not None:
                found[arch.key] = {"latency_refused": measured.refused, "measure_node": node["id"]}
        if measured.refused is not None:
            log.warning("latency of %d arch(s) %s; their latency stays predicted",
                        sum("latency_refused" in v for v in found.values()), measured.refused)
        return found

    # ---- reference point and hypervolume ------------------------------------------------
    def _reference_point(self, task, predictor) -> list[float]:
        """Worst acceptable value of each objective (minimized form), fixed at study creation."""
        largest = self.config.space.largest()
        costs = self._costs(task, largest)
        bounds = {c.metric: c.bound for c in self.config.constraints if c.op == "<="}
        reference = []
        for metric, direction in zip(self.objectives.metrics, self.objectives.directions, strict=True):
            if direction == "maximize":
                reference.append(0.0)  # accuracy 0: every model improves on it
            elif metric in bounds:
                reference.append(bounds[metric])
            elif metric == "perplexity":  # a uniform guess over the vocabulary: every model improves on it
                reference.append(float(task.spec.num_classes))
            elif metric == "latency_ms":
                mean = predictor.predict(latency_features(self.config.space, task.spec, self.target, [largest]))
                reference.append(float(mean[0]) * 1.1)
            else:
                reference.append(float(costs[metric]) * 1.1)
        return reference

    def _record_hypervolume(self, engine, study, done: int) -> tuple[float, int]:
        hv, size = front_and_hypervolume(study, self.objectives)
        record_hypervolume(engine, study.study_name, done, hv, size)
        return hv, size
