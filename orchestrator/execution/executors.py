"""Where evaluations run: in-process (`local`, for tests and debugging) or on Ray.

Both take the same jobs and give the same results for the same seed. On Ray,
accuracy evaluations run in Ray Tune trials (one CPU each, living for the whole
search and fed by a job board; a trial whose worker dies, or whose node is gone,
is retried and its jobs go to the live workers); a batch's latency is measured
by one task that holds the target's custom resource (capacity 1), so it runs
only on the node that has it, never beside another measurement, and only while
every worker waits idle on the board: the driver measures between batches. If
no live node holds the target, the measurement stops with `TargetLost`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid
from typing import Any, Protocol

# read when ray.tune is imported: the legacy reporter honours verbose=0 (no Tune tables in the driver's output)
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from ray.tune import Callback  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from orchestrator.errors import TargetLost, WorkersLost  # noqa: E402
from orchestrator.execution.evaluation import EvalJob, evaluate_arch, measure_beside  # noqa: E402
from orchestrator.execution.job_board import POLL_SECONDS, JobBoard, tune_worker  # noqa: E402
from predictors.measure import Protocol as MeasurementProtocol  # noqa: E402
from search_space import InputError  # noqa: E402

log = logging.getLogger("elastiq.executor")


class Executor(Protocol):
    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]: ...

    def measure(self, jobs: list[EvalJob], probes: list[tuple[str, dict]], protocol: MeasurementProtocol,
                seed: int) -> dict[str, Any] | Exception:
        """`evaluation.measure_beside` of the batch, run where the target is."""

    def close(self) -> None: ...


class LocalExecutor:
    def evaluate(self, jobs: list[EvalJob]) -> list[dict[str, Any] | Exception]:
        return [_guard(evaluate_arch, job) for job in jobs]

    def measure(self, jobs: list[EvalJob], probes: list[tuple[str, dict]], protocol: MeasurementProtocol,
                seed: int) -> dict[str, Any] | Exception:
        try:
            return measure_beside(jobs, probes, protocol, seed)
        except Exception as exc:  # noqa: BLE001 - a failed measurement leaves the batch's latency predicted
            log.warning("latency measurement of a batch of %d failed: %s", len(jobs), exc)
            return exc

    def close(self) -> None:
        pass


def _guard(function, job):
    try:
        return function(job)
    except Exception as exc:  # noqa: BLE001 - a failed evaluation fails its trial, not the study
        log.warning("evaluation of %s failed: %s", job.arch[:60], exc)
        return exc


# Ray runs its workers at niceness 15: a latency measurement in one would give the CPU up to anything
# else on the machine (the driver, Ray's own processes) and read slow. The target's node of a cluster
# needs the same: `RAY_worker_niceness=0 ray start ...` (the README's recipe).
RAY_SYSTEM_CONFIG = {"worker_niceness": 0}


class ClusterTooSmall(InputError):
    """The Ray cluster lacks the CPUs or GPUs that the config asks of it."""


def require_resources(kind: str, amount: float, asked_by: str) -> None:
    """Refuse a run whose workers need more of `kind` ("CPU", "GPU") than the Ray cluster has."""
    import ray

    have = ray.cluster_resources().get(kind, 0.0)
    if have < amount:
        raise ClusterTooSmall(f"{asked_by} needs {amount:g} {kind}s and the Ray cluster has {have:g}")


class ClusterUnreachable(InputError):
    """No Ray cluster answers at `ray.address`."""


def check_ray_address(address: str | None) -> None:
    """Refuse a `host:port` where nothing listens (Ray itself would retry for minutes); `auto`, a
    `ray://` client address and None (a local Ray) are left to Ray."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except (OSError, ValueError):
        raise ClusterUnreachable(f"ray.address {address}: no Ray cluster answers there (start it with "
                                 f"`ray start --head`, or use auto or null)") from None


def start_ray(address: str | None, num_cpus: int, resources: dict[str, float] | None = None) -> bool:
    """Join the Ray at `address`, or start a local one (with `num_cpus` and the custom `resources`)
    when the address is None; nothing if Ray is already running in this process. Returns whether
    it started or joined one (then the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    check_ray_address(address)
    if address is None:
        # "local": a new Ray here, even if a `ray start` cluster left its address file behind
        ray.init(address="local", num_cpus=num_cpus, resources=resources or {}, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, _system_config=RAY_SYSTEM_CONFIG)
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return True


def target_resource(target_name: str) -> str:
    return f"elastiq_target_{target_name}"


# state shared with the running experiments, by key: Tune copies its searcher, so the
# driver and the searcher meet here rather than through attributes
_WORKER_POOLS: dict[str, dict[str, Any]] = {}


class _WorkerSearcher(Searcher):
    """Keeps `workers` long-lived worker trials running (see `job_board`), replacing any
    that Tune gives up on, and ends the experiment when the driver closes the pool."""

    def __init__(self, board: str, namespace: str, workers: int, max_failures: int):
        super().__init__()
        self.key = uuid.uuid4().hex
        _WORKER_POOLS[self.key] = {"closing": False, "live": set(), "lost": 0}
        self.board, self.namespace, self.workers = board, namespace, workers
        # worker trials lost in a row (each after its retries, no job finished in between)
        # before the pool stops replacing them: the workers die at start-up, not on a job
        self.max_lost = workers

    def suggest(self, trial_id):
        pool = _WORKER_POOLS[self.key]
        if pool["closing"] or pool["lost"] >= self.max_lost:
            return Searcher.FINISHED if not pool["live"] else None
        if len(pool["live"]) >= self.workers:
            return None
        pool["live"].add(trial_id)
        return {"board": self.board, "namespace": self.namespace}

    def save(self, checkpoint_path: str) -> None:
        pass  # nothing to save: the study in the database is the search's state (and Tune warns otherwise)

    def restore(self, checkpoint_path: str) -> None:
        pass

    def on_trial_complete(self, trial_id, result=None, error=False):
        import ray

        pool = _WORKER_POOLS[self.key]
        pool["live"].discard(trial_id)
        if error:
            pool["lost"] += 1
            ray.get_actor(self.board, namespace=self.namespace).give_up.remote(
                trial_id, "its worker died on every retry")


class _RequeueOnRecover(Callback):
    """When Tune restarts a worker trial (its process died, or its node), the share it held goes back
    to the board's queue before the restart is scheduled, so a live worker takes it."""

    def __init__(self, board: str, namespace: str):
        self.board, self.namespace = board, namespace

    def on_trial_recover(self, iteration, trials, trial, **info):
        import ray

        ray.get(ray.get_actor(self.board, namespace=self.namespace).requeue.remote(trial.trial_id))


def target_available(resource: str) -> bool:
    """Whether a live node of the Ray cluster holds the target's resource."""
    import ray

    return any(node.get("Alive") and resource in node.get("Resources", {}) for node in ray.nodes())


class RayExecutor:
    """Ray Tune for accuracy trials (long-lived worker trials fed by a job board);
    target-holding tasks for latency."""

    def __init__(self, address: str | None, workers: int, target_name: str, max_failures: int = 2,
                 cpus_per_worker: int = 1, gpus_per_worker: float = 0.0):
        import ray
        from ray import tune

        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Tune runs in a thread of the driver
        self.workers = workers
        self.max_failures = max_failures
        self.target_name = target_name
        self._started_ray = start_ray(address, num_cpus=max(workers, 1) * cpus_per_worker + 1,
                                      resources={target_resource(target_name): 1})
        if gpus_per_worker > 0:  # Tune would wait forever for a GPU the cluster does not have
            try:
                require_resources("GPU", gpus_per_worker, "ray.gpus_per_worker")
            except ClusterTooSmall:
                if self._started_ray:
                    ray.shutdown()
                raise
        self._tune_dir = tempfile.mkdtemp(prefix="elastiq-tune-")
        # no CPU reserved: the target's resource (capacity 1) is what a measurement holds, and the driver
        # measures only between batches, when the workers (which keep their CPUs) wait on the board
        self._measure = ray.remote(num_cpus=0, max_retries=max_failures)(measure_beside)
        namespace = ray.get_runtime_context().namespace
        board_name = f"elastiq-board-{uuid.uuid4().hex}"
        # the board lives on the driver's node: another node may leave the cluster, the driver's may not
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self._board = JobBoard.options(name=board_name, namespace=namespace, scheduling_strategy=here).remote(workers)
        self._searcher = _WorkerSearcher(board_name, namespace, workers, max_failures)
        self._pool = _WORKER_POOLS[self._searcher.key]
        self._next_ticket = 0
        tuner = tune.Tuner(
            tune.with_resources(tune_worker, {"cpu": cpus_per_worker, "gpu": gpus_per_worker}),
            tune_config=tune.TuneConfig(search_alg=self._searcher, num_samples=-1, max_concurrent_trials=workers),
            run_config=tune.RunConfig(storage_path=self._tune_dir, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      callbacks=[_RequeueOnRecover(board_name, namespace)]),
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
        """Post the batch on the board; the workers take it in shares."""
        import ray

        if not jobs:
            return []
        first = self._next_ticket
        self._next_ticket += len(jobs)
        ray.get(self._board.post.remote([(first + i, job) for i, job in enumerate(jobs)]))
        outcomes: dict[int, dict[str, Any] | Exception] = {}
        while True:
            for ticket, outcome in ray.get(self._board.collect.remote()):
                if not outcome.get("worker_lost"):
                    self._pool["lost"] = 0  # a job finished: the workers do not die at start-up
                outcomes[ticket - first] = outcome if "error" not in outcome else RuntimeError(outcome["error"])
            if self._pool["lost"] >= self._searcher.max_lost or not self._thread.is_alive():
                raise WorkersLost(f"the Ray Tune workers died {self.workers * (self.max_failures + 1)} times "
                                  f"in a row without finishing a job ({self._fit_error or 'see the Ray worker logs'}); "
                                  f"the unfinished trials run again on resume")
            if len(outcomes) == len(jobs):
                break
        return [outcomes[i] for i in range(len(jobs))]

    def measure(self, jobs: list[EvalJob], probes: list[tuple[str, dict]], protocol: MeasurementProtocol,
                seed: int) -> dict[str, Any] | Exception:
        """One task on the target's node measures the batch beside its probes; TargetLost if no live
        node holds the target (it left the cluster, before or during the measurement)."""
        import ray

        resource = target_resource(self.target_name)
        ref = self._measure.options(resources={resource: 1}).remote(jobs, probes, protocol, seed)
        while True:
            done, _ = ray.wait([ref], timeout=POLL_SECONDS)
            if done:
                break
            if not target_available(resource):
                try:
                    ray.cancel(ref, force=True)
                except ray.exceptions.RayError:
                    pass  # its node is gone: nothing left to cancel
                raise TargetLost(f"no node of the Ray cluster holds target {self.target_name!r} (resource "
                                 f"{resource}) any more: its latency cannot be measured; start its node again and "
                                 f"resume the study (the batch runs again)")
        try:
            return ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a failed measurement leaves the batch's latency predicted
            log.warning("latency measurement of a batch of %d failed: %s", len(jobs), exc)
            return exc

    def close(self) -> None:
        import ray

        self._pool["closing"] = True
        try:
            ray.get(self._board.close.remote())  # idle workers stop; the experiment ends with them
        except ray.exceptions.RayError as exc:  # closing after a failure: report that failure, not this one
            log.warning("the job board could not be closed (%s)", type(exc).__name__)
        self._thread.join(timeout=60)
        _WORKER_POOLS.pop(self._searcher.key, None)
        shutil.rmtree(self._tune_dir, ignore_errors=True)
        if self._started_ray:
            ray.shutdown()  # only the Ray this driver started
