"""The study lease: one driver per study (DESIGN decision 2).

A row per study names its driver and carries a heartbeat that a background
thread refreshes. Another driver is refused while the heartbeat is fresh and
takes over once it is stale (its driver died).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.storage.schema import LeaseRow, _now
from search_space import InputError


class StudyBusy(InputError):
    """Another live driver holds the study."""


class Lease:
    def __init__(self, engine: Engine, study: str, timeout_s: float = 30.0):
        self.engine, self.study, self.timeout_s = engine, study, timeout_s
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        host, pid = socket.gethostname(), os.getpid()
        try:
            with Session(self.engine) as session, session.begin():
                row = session.get(LeaseRow, self.study, with_for_update=True)
                now = _now()
                if row is None:
                    session.add(LeaseRow(study=self.study, owner=self.owner, host=host, pid=pid, heartbeat_at=now))
                else:
                    age = (now - row.heartbeat_at).total_seconds()
                    dead = row.host == host and not _alive(row.pid)  # a driver of this machine that was killed
                    if row.owner != self.owner and age < self.timeout_s and not dead:
                        raise StudyBusy(f"study {self.study!r} is being run by another driver (pid {row.pid} on "
                                        f"{row.host}, heartbeat {age:.0f} s ago); it can be taken over once its "
                                        f"heartbeat is {self.timeout_s:.0f} s old")
                    # conditional on the row we read: of two drivers taking over at once, one wins
                    taken = session.execute(update(LeaseRow).where(
                        LeaseRow.study == self.study, LeaseRow.owner == row.owner,
                        LeaseRow.heartbeat_at == row.heartbeat_at).values(
                        owner=self.owner, host=host, pid=pid, heartbeat_at=now))
                    if taken.rowcount != 1:
                        raise StudyBusy(f"study {self.study!r} was just taken by another driver")
        except IntegrityError:
            raise StudyBusy(f"study {self.study!r} was just taken by another driver") from None
        self._thread = threading.Thread(target=self._beat, name="elastiq-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            try:
                with Session(self.engine) as session, session.begin():
                    row = session.get(LeaseRow, self.study)
                    if row is not None and row.owner == self.owner:
                        row.heartbeat_at = _now()
            except Exception:  # noqa: BLE001 - a missed beat is retried; a lost database shows in the driver
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(LeaseRow).where(LeaseRow.study == self.study, LeaseRow.owner == self.owner))
            if row is not None:
                session.delete(row)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
