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


def _train_rank() -> int | None:
    """This process's rank in a Ray Train group, None outside one."""
    try:
        import ray.train

        return ray.train.get_context().get_world_rank()
    except Exception:  # noqa: BLE001 - not in a Ray Train worker
        return None


def digits_dying_in_training(seed: int = 0, marker: str = "", at_step: int = 0, loads: str = ""):
    """Digits. The Ray Train worker of rank 1 that loads it first dies at step `at_step` of its
    training (mid-run, as under the OOM killer); each worker that loads it leaves a file in `loads`."""
    rank = _train_rank()
    if rank is not None:
        (Path(loads) / f"load-{os.getpid()}").write_text(str(rank))
        if rank == 1 and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            import supernet.training.train as train

            original = train.sandwich_loss

            def dying(model, x, y, largest, students, settings, step, teacher=None):
                if step >= at_step:
                    os._exit(1)
                return original(model, x, y, largest, students, settings, step, teacher)

            train.sandwich_loss = dying
    return digits(seed)
