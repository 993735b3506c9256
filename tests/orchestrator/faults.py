"""A task that kills the Ray worker process evaluating with it, once: a worker dying in
the middle of a trial. The driver (whose pid the options name) is spared."""

import os
from pathlib import Path

from supernet.tasks import digits


def digits_dying_once(seed: int = 0, marker: str = "", driver_pid: int = 0):
    if os.getpid() != driver_pid and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)  # no cleanup, no exception: the process is gone, as under the OOM killer
    return digits(seed)


def digits_dying_always(seed: int = 0, driver_pid: int = 0):
    """Every worker that loads the task dies: a worker that cannot start."""
    if os.getpid() != driver_pid:
        os._exit(1)
    return digits(seed)
