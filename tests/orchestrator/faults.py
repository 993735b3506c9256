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


def _in_ray_worker() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None


def _holds_a_target() -> bool:
    import ray

    return any(name.startswith("elastiq_target_") for name in ray.get_runtime_context().get_assigned_resources())


def digits_meeting(seed: int = 0, rendezvous: str = "", workers: int = 0, stall_measurement: bool = False):
    """Digits, loaded in a Ray worker process only once `workers` of them are loading it: each has
    then taken its first job, so every node has a job in hand. With `stall_measurement`, the first
    latency measurement (the task that holds the target) says so and waits to be stopped with its node.
    Progress, not seconds: whoever stops a node knows the moment from these files."""
    import time

    if _in_ray_worker():
        meeting = Path(rendezvous)
        if stall_measurement and _holds_a_target():
            if not list(meeting.glob("measuring-*")):  # once: the resumed study measures normally
                (meeting / f"measuring-{os.getpid()}").write_text("")
                while True:
                    time.sleep(1)
        else:
            (meeting / f"worker-{os.getpid()}").write_text("")
            while len(list(meeting.glob("worker-*"))) < workers:
                time.sleep(0.05)
    return digits(seed)
