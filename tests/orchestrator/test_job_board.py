"""The job board that feeds Ray Tune's long-lived worker trials, run as a plain object."""

import asyncio

import pytest

from orchestrator import job_board
from orchestrator.job_board import STOP, JobBoard

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
        while True:
            progressed = False
            for worker in ("w1", "w2"):
                share = await board.take(worker, outcomes[worker])
                outcomes[worker] = None
                if share in (None, STOP):
                    continue
                progressed = True
                sizes.append(len(share))
                seen += [ticket for ticket, _ in share]
                outcomes[worker] = [{"accuracy": ticket} for ticket, _ in share]
            if not progressed:
                break
        collected = await board.collect()
        return sizes, seen, collected

    sizes, seen, collected = asyncio.run(run())
    assert sorted(seen) == list(range(64))
    assert sizes[0] == 16 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    assert sorted(collected) == [(t, {"accuracy": t}) for t in range(64)]


def test_a_restarted_worker_gets_back_the_share_it_died_in():
    async def run():
        board = Board(workers=1)
        await board.post(jobs(3))
        first = await board.take("w")
        again = await board.take("w")  # the same worker id, with nothing to report: it died
        await board.take("w", [{"accuracy": 1.0}] * len(again))
        return first, again, await board.collect()

    first, again, collected = asyncio.run(run())
    assert first == again and len(collected) == len(first)


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


def test_an_idle_worker_is_told_to_ask_again_until_the_board_closes():
    async def run():
        board = Board(workers=1)
        idle = await board.take("w")
        nothing = await board.collect()
        await board.close()
        return idle, nothing, await board.take("w")

    assert asyncio.run(run()) == (None, [], STOP)
