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
import os
import queue
import shutil
import tempfile
import threading
import uuid
from typing import Any, Protocol

# read when ray.tune is imported: the legacy reporter honours verbose=0 (no Tune tables in the driver's output)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from ray.tune.search import Searcher  # noqa: E402

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


# queues of the running experiments, by key: Tune pickles its searcher, and queues do not pickle
_CHANNELS: dict[str, tuple[queue.Queue, queue.Queue]] = {}


class _QueueSearcher(Searcher):
    """Feeds one long-running Tune experiment from a queue, so its trial actors (and the
    supernet each has loaded) live for the whole search: a new `Tuner.fit` per batch
    costs seconds of Tune's fixed overhead."""

    def __init__(self):
        super().__init__()
        self.key = uuid.uuid4().hex
        _CHANNELS[self.key] = (queue.Queue(), queue.Queue())
        self.assigned: dict[str, list] = {}
        self.finished = False

    def suggest(self, trial_id):
        if self.finished:
            return Searcher.FINISHED
        try:
            group = _CHANNELS[self.key][0].get_nowait()
        except queue.Empty:
            return None  # nothing to run yet; Tune asks again
        if group is None:
            self.finished = True
            return Searcher.FINISHED
        self.assigned[trial_id] = group
        return {"jobs": group}

    def on_trial_complete(self, trial_id, result=None, error=False):
        _CHANNELS[self.key][1].put((self.assigned.pop(trial_id, None), result, error))


class RayExecutor:
    """Ray Tune for accuracy trials (one experiment for the whole search, trial actors
    reused); target-holding tasks for latency."""

    def __init__(self, address: str | None, workers: int, target_name: str, max_failures: int = 2):
        import ray
        from ray import tune

        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Tune runs in a thread of the driver
        self.workers = workers
        self.target_name = target_name
        self._started_ray = False
        if not ray.is_initialized():
            if address is None:  # a local Ray that holds this machine's target
                # "local": a new Ray here, even if a `ray start` cluster left its address file behind
                ray.init(address="local", num_cpus=max(workers, 1) + 1, resources={target_resource(target_name): 1},
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            self._started_ray = True
        self._storage = tempfile.mkdtemp(prefix="elastiq-tune-")
        # no CPU reserved: the target's resource (capacity 1) is what a measurement holds, and the driver
        # measures only between batches, when the trial actors (which keep their CPUs) are idle
        self._measure = ray.remote(num_cpus=0, max_retries=max_failures)(measure_arch)
        self._searcher = _QueueSearcher()
        self._groups, self._results = _CHANNELS[self._searcher.key]
        tuner = tune.Tuner(
            tune.with_resources(tune_trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=self._searcher, num_samples=-1, max_concurrent_trials=workers,
                                        reuse_actors=True),
            run_config=tune.RunConfig(storage_path=self._storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=max_failures)),
        )
        self._fit_error: BaseException | None = None
        self._thread = threading.Thread(target=self._fit, args=(tuner,), name="elastiq-tune", daemon=True)
        self._thread.start()

    def _fit(self, tuner) -> None:
        try:
            tuner.fit()
        except BaseException as exc:  # noqa: BLE001 - reported to the driver by evaluate()
            self._fit_error = exc

    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        """One Tune trial per worker, each evaluating its share of the batch."""
        if not jobs:
            return []
        groups = [[job.to_dict() for job in jobs[i::self.workers]] for i in range(min(self.workers, len(jobs)))]
        for group in groups:
            self._groups.put(group)
        by_arch: dict[str, dict[str, Any] | Exception] = {}
        waiting = len(groups)
        while waiting:
            try:
                group, result, error = self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    reason = self._fit_error or RuntimeError("the Tune experiment ended")
                    return [by_arch.get(job.arch, RuntimeError(str(reason))) for job in jobs]
                continue
            if group is None:
                continue
            waiting -= 1
            if error or not result or "results" not in result:
                by_arch.update({job["arch"]: RuntimeError("evaluation failed on its worker") for job in group})
                continue
            for job, outcome in zip(group, json.loads(result["results"]), strict=True):
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

        self._groups.put(None)  # the experiment ends once its running trials do
        self._thread.join(timeout=60)
        _CHANNELS.pop(self._searcher.key, None)
        shutil.rmtree(self._storage, ignore_errors=True)
        if self._started_ray:
            ray.shutdown()  # only the Ray this driver started
