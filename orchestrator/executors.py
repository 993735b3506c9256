"""Where evaluations run: in-process (`local`, for tests and debugging) or on Ray.

Both take the same jobs and give the same results for the same seed. On Ray,
accuracy trials run as Ray Tune trials (one CPU each, actors reused, a trial
whose worker dies is retried); latency measurements run as tasks that hold the
target's custom resource (capacity 1), so a measurement never shares the
target with other work and runs only on the node that has it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from typing import Any, Protocol

from orchestrator.evaluation import EvalJob, evaluate_arch, measure_arch, tune_trainable

log = logging.getLogger("elastiq.executor")


class Executor(Protocol):
    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]: ...

    def measure(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]: ...

    def close(self) -> None: ...


class LocalExecutor:
    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        return [_guard(evaluate_arch, job) for job in jobs]

    def measure(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        return [_guard(measure_arch, job) for job in jobs]

    def close(self) -> None:
        pass


def _guard(function, job):
    try:
        return function(job)
    except Exception as exc:  # noqa: BLE001 - a failed evaluation fails its trial, not the study
        log.warning("evaluation of %s failed: %s", job.arch[:60], exc)
        return exc


def target_resource(target_name: str) -> str:
    return f"elastiq_target_{target_name}"


class RayExecutor:
    """Ray Tune for accuracy trials; target-holding tasks for latency."""

    def __init__(self, address: str | None, workers: int, target_name: str, max_failures: int = 2):
        import ray

        self.workers = workers
        self.target_name = target_name
        self.max_failures = max_failures
        self._started_ray = False
        if not ray.is_initialized():
            if address is None:  # a local Ray that holds this machine's target
                ray.init(num_cpus=max(workers, 1) + 1, resources={target_resource(target_name): 1},
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
                self._started_ray = True
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                self._started_ray = True
        self._storage = tempfile.mkdtemp(prefix="elastiq-tune-")
        self._measure = ray.remote(num_cpus=1, max_retries=max_failures)(measure_arch)

    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        """One Tune trial per worker, each evaluating its share of the batch: a trial costs
        seconds of Tune overhead, an evaluation tens of milliseconds."""
        if not jobs:
            return []
        from ray import tune

        groups = [jobs[i::self.workers] for i in range(min(self.workers, len(jobs)))]
        tuner = tune.Tuner(
            tune.with_resources(tune_trainable, {"cpu": 1}),
            param_space={"jobs": tune.grid_search([[job.to_dict() for job in group] for group in groups])},
            tune_config=tune.TuneConfig(max_concurrent_trials=self.workers, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=self._storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=self.max_failures)),
        )
        by_arch: dict[str, dict[str, Any] | Exception] = {}
        for result in tuner.fit():
            group = result.config["jobs"]
            if result.error is not None:
                message = str(result.error).splitlines()[0] if str(result.error) else "failed"
                by_arch.update({job["arch"]: RuntimeError(message) for job in group})
                continue
            for job, outcome in zip(group, json.loads(result.metrics["results"]), strict=True):
                by_arch[job["arch"]] = outcome if "error" not in outcome else RuntimeError(outcome["error"])
        return [by_arch.get(job.arch, RuntimeError("no result")) for job in jobs]

    def measure(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        import ray

        resource = {target_resource(self.target_name): 1}
        refs = [self._measure.options(resources=resource).remote(job) for job in jobs]
        results: list[dict[str, Any] | Exception] = []
        for ref in refs:
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    def close(self) -> None:
        import ray

        shutil.rmtree(self._storage, ignore_errors=True)
        if self._started_ray:
            ray.shutdown()  # only the Ray this driver started
