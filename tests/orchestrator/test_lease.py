"""The study lease: one driver per study; a dead or silent driver is taken over."""

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from orchestrator.storage.lease import Lease, StudyBusy
from orchestrator.storage.schema import LeaseRow, _now, connect


@pytest.fixture
def engine(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'lease.db'}")
    yield engine
    engine.dispose()


def _hold(engine, host, pid, age_s):
    with Session(engine) as session, session.begin():
        session.merge(LeaseRow(study="s", owner="other", host=host, pid=pid,
                               heartbeat_at=_now() - timedelta(seconds=age_s)))


def _holder(engine):
    with Session(engine) as session:
        return session.get(LeaseRow, "s")


def test_a_live_driver_is_refused_until_its_heartbeat_is_stale(engine):
    first = Lease(engine, "s").acquire()
    with pytest.raises(StudyBusy, match="being run by another driver"):
        Lease(engine, "s").acquire()
    first.release()
    second = Lease(engine, "s").acquire()  # released: free
    second.release()
    _hold(engine, "elsewhere", 1, age_s=5)
    with pytest.raises(StudyBusy, match="heartbeat 5 s ago"):
        Lease(engine, "s", timeout_s=30).acquire()
    _hold(engine, "elsewhere", 1, age_s=31)
    taker = Lease(engine, "s", timeout_s=30).acquire()
    assert _holder(engine).owner == taker.owner and _holder(engine).pid == os.getpid()
    taker.release()
    assert _holder(engine) is None


def test_a_killed_driver_on_this_machine_is_taken_over_at_once(engine):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold(engine, socket.gethostname(), dead.pid, age_s=0)
    lease = Lease(engine, "s").acquire()
    assert _holder(engine).owner == lease.owner
    lease.release()
    _hold(engine, socket.gethostname(), os.getpid(), age_s=0)  # alive: refused
    with pytest.raises(StudyBusy):
        Lease(engine, "s").acquire()


def test_the_heartbeat_keeps_the_lease_fresh(engine):
    """Waits for beats, not for a time: on a slow machine the beats come later, and still come."""
    import time

    lease = Lease(engine, "s", timeout_s=0.4).acquire()
    seen = [_holder(engine).heartbeat_at]
    while len(set(seen)) < 3:  # two beats after the acquisition (pytest's timeout ends a lease that never beats)
        time.sleep(0.05)
        seen.append(_holder(engine).heartbeat_at)
    assert seen == sorted(seen)
    lease.release()
