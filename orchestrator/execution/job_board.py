"""How Ray Tune trials get their evaluations: a job board that long-lived worker trials pull from.

Each Tune trial is a worker that lives for the whole search: it loads the supernet
once and then takes shares of the posted jobs from the board (a small Ray actor)
until the board closes. Short-lived trials per batch do not work here: between
batches Tune keeps at most one idle actor, so every batch paid a cold start (torch
import, checkpoint load) on all but one worker, and 2 workers ran no faster than 1.
Shares shrink as the batch drains, which balances uneven jobs across workers.

A worker that dies (its process, or its whole node) is reported by Tune, and the
share it held goes back to the front of the pending jobs, for any live worker; a
worker that Tune gives up on fails that share only. An idle worker waits inside
the board until there is work or the board closes: it does not poll, so between
batches (when the driver measures latency) nothing of the search runs.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import ray

POLL_SECONDS = 1.0  # how long the driver waits on the board per call (it checks on its workers between calls)
STOP = "stop"


@ray.remote(num_cpus=0)
class JobBoard:
    """Pending jobs, the share each worker holds, and the outcomes not yet collected."""

    def __init__(self, workers: int):
        self._workers = workers
        self._pending: collections.deque[tuple[int, dict]] = collections.deque()
        self._held: dict[str, list[tuple[int, dict]]] = {}
        self._outcomes: list[tuple[int, dict]] = []
        self._closed = False
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def post(self, tickets_and_jobs: list[tuple[int, dict]]) -> None:
        self._pending.extend(tickets_and_jobs)
        await self._notify()

    async def take(self, worker: str, outcomes: list[dict] | None = None):
        """Record `worker`'s outcomes for the share it holds and give it the next share: a list of
        (ticket, job) as soon as there is one, or STOP once the board is closed."""
        if outcomes is not None and worker in self._held:
            self._outcomes.extend(zip((ticket for ticket, _ in self._held.pop(worker)), outcomes, strict=True))
            await self._notify()
        async with self._changed:
            await self._changed.wait_for(lambda: self._pending or self._closed)
        if not self._pending:
            return STOP
        # guided self-scheduling: large shares while much is pending (few round trips), single
        # jobs at the end (no worker left idle while another finishes a long share)
        size = max(1, len(self._pending) // (2 * self._workers))
        self._held[worker] = [self._pending.popleft() for _ in range(size)]
        return self._held[worker]

    async def requeue(self, worker: str) -> None:
        """`worker` died and Tune will restart it: its share goes back to the front of the queue."""
        if worker in self._held:
            self._pending.extendleft(reversed(self._held.pop(worker)))
            await self._notify()

    async def give_up(self, worker: str, reason: str) -> None:
        """Tune gave up on `worker`: the share it held fails; the others go on."""
        if worker in self._held:
            lost = {"error": reason, "worker_lost": True}
            self._outcomes.extend((ticket, lost) for ticket, _ in self._held.pop(worker))
            await self._notify()

    async def collect(self) -> list[tuple[int, dict]]:
        """The outcomes since the last call, waiting up to POLL_SECONDS for one."""
        if not self._outcomes:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._outcomes)), POLL_SECONDS)
                except TimeoutError:
                    return []
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    async def close(self) -> None:
        self._closed = True
        await self._notify()


def tune_worker(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable: evaluate jobs from the board until it closes."""
    from ray import tune

    board = ray.get_actor(config["board"], namespace=config["namespace"])
    worker = tune.get_context().get_trial_id()
    outcomes, evaluated = None, 0
    while (share := ray.get(board.take.remote(worker, outcomes))) != STOP:
        outcomes = [_evaluate(job) for _, job in share]
        evaluated += len(share)
    tune.report({"evaluated": evaluated})


def _evaluate(job) -> dict:
    from orchestrator.execution.evaluation import current_node, evaluate_arch

    try:
        return {**evaluate_arch(job), "node": current_node()}
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which fails that trial only
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
