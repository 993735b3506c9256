"""The job board that feeds Ray Tune's long-lived worker trials, run as a plain object."""

import asyncio

import pytest

from orchestrator.execution import job_board
from orchestrator.execution.job_board import STOP, JobBoard

Board = JobBoard.__ray_actor_class__  # the class under the Ray actor: its logic without a cluster


@pytest.fixture(autouse=True)
def short_polls(monkeypatch):
    monkeypatch.setattr(job_board, "POLL_SECONDS", 0.05)


def jobs(n):
    return [(ticket, {"arch": f"a{ticket}"}) for ticket in range(n)]


def test_shares_shrink_as_the_batch_drains_and_every_job_is_handed_out_once():
    async def run():
        board = Board(workers=2)
        await board.post(jobs(64))
        sizes, seen = [], []
        outcomes = {"w1": None, "w2": None}
        while board._pending:
            for worker in ("w1", "w2"):
                if not board._pending:
                    break
                share = await board.take(worker, outcomes[worker])
                sizes.append(len(share))
                seen += [ticket for ticket, _ in share]
                outcomes[worker] = [{"accuracy": ticket} for ticket, _ in share]
        await board.close()
        assert await board.take("w1", outcomes["w1"]) == STOP and await board.take("w2", outcomes["w2"]) == STOP
        return sizes, seen, await board.collect()

    sizes, seen, collected = asyncio.run(run())
    assert sorted(seen) == list(range(64))
    assert sizes[0] == 16 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    assert sorted(collected) == [(t, {"accuracy": t}) for t in range(64)]


def test_the_share_of_a_worker_that_died_goes_back_to_the_front_for_any_worker():
    async def run():
        board = Board(workers=2)
        await board.post(jobs(8))
        dead = await board.take("dead")  # 8 // 4 = 2 jobs
        alive = await board.take("alive")
        await board.requeue("dead")  # what the Tune callback does when the worker's process or node is gone
        first = await board.take("alive", [{"accuracy": 0.5}] * len(alive))
        second = await board.take("alive", [{"accuracy": 0.5}] * len(first))
        return dead, alive, first + second

    dead, alive, again = asyncio.run(run())
    assert [t for t, _ in again[:len(dead)]] == [t for t, _ in dead]  # the dead worker's jobs, first
    assert not {t for t, _ in alive} & {t for t, _ in dead}


def test_a_worker_given_up_fails_only_its_share():
    async def run():
        board = Board(workers=2)
        await board.post(jobs(8))
        lost = await board.take("lost")
        kept = await board.take("kept")
        await board.give_up("lost", "its worker died on every retry")
        await board.take("kept", [{"accuracy": 0.5}] * len(kept))
        return lost, kept, await board.collect()

    lost, kept, collected = asyncio.run(run())
    by_ticket = dict(collected)
    assert all(by_ticket[t] == {"error": "its worker died on every retry", "worker_lost": True} for t, _ in lost)
    assert all(by_ticket[t] == {"accuracy": 0.5} for t, _ in kept)


def test_an_idle_worker_waits_inside_the_board_without_polling_until_work_or_the_end():
    async def run():
        board = Board(workers=1)
        waiting = asyncio.ensure_future(board.take("w"))
        for _ in range(20):  # the event loop runs on; the call stays parked (no clock involved)
            await asyncio.sleep(0)
        parked = not waiting.done()
        await board.post(jobs(1))
        share = await waiting
        closing = asyncio.ensure_future(board.take("w", [{"accuracy": 1.0}]))
        for _ in range(20):
            await asyncio.sleep(0)
        still_parked = not closing.done()
        nothing = await board.collect()
        await board.close()
        return parked, share, still_parked, nothing, await closing

    parked, share, still_parked, nothing, last = asyncio.run(run())
    assert parked and share == [(0, {"arch": "a0"})] and still_parked
    assert nothing == [(0, {"accuracy": 1.0})] and last == STOP
