"""A tiny trained supernet and its latency dataset, shared by the orchestrator tests."""

import pytest
import yaml

from orchestrator.cli import main
from tests.conftest import CONFIGS


@pytest.fixture(autouse=True)
def probes_never_refuse(monkeypatch):
    """Drift probes refuse a measurement while other work shares the cores (tested with a fake clock in
    tests/predictors/test_drift_probes.py). Here a busy or drifting machine would decide the verdict of
    tests about something else: an export after a resume failed that way while other work ran. Their
    noise floor is made wide; this process only (Ray workers keep theirs, and a search keeps going past a
    refused batch)."""
    monkeypatch.setattr("predictors.measure.noise_floor", lambda references: 10.0)


def start_local_ray() -> None:
    import logging

    import ray

    from orchestrator.execution.executors import RAY_SYSTEM_CONFIG, target_resource

    ray.init(address="local", num_cpus=3, resources={target_resource("cpu-b1"): 1}, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING, _system_config=RAY_SYSTEM_CONFIG)


def restart_local_ray() -> None:
    """What a driver's death does to the Ray it started: every actor of it ends (with its half-done work),
    here at once. Then the session's Ray again, for the tests after."""
    import ray

    ray.shutdown()
    start_local_ray()


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the session (it takes seconds to start), holding the tests' target;
    a search finding Ray started uses it and leaves it running."""
    import ray

    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny supernet and a latency dataset, shared by the session."""
    base = tmp_path_factory.mktemp("search")
    config = write_config(base, "base.yaml", study="base")
    assert main(["train-supernet", "-c", str(config), "--no-progress"]) == 0
    assert main(["measure", "-c", str(config), "--no-progress"]) == 0
    return base


def write_config(base, filename="study.yaml", **changes):
    """A study on the shared tiny supernet. Its measurements are never flagged (`max_gap` 10): a
    busy machine would otherwise decide how many are usable, and a search refuses fewer than 10. The
    tests of flagging set their own tolerance or flag rows themselves."""
    config = {"study": "tiny-search", "storage": f"sqlite:///{base / 'study.db'}", "seed": 3,
              "space": str(CONFIGS / "spaces" / "tiny.yaml"), "task": {"name": "digits"},
              "supernet": {"steps": 30, "batch_size": 32, "warmup_steps": 3, "sandwich_random": 1, "lr": 0.01,
                           "checkpoint": str(base / "tiny.pt")},
              "target": {"name": "cpu-b1"}, "measure": {"archs": 16, "passes": 5, "max_gap": 10},
              "objectives": {"accuracy": "maximize", "latency_ms": "minimize"},
              "constraints": ["params <= 20000"],
              "search": {"strategy": "evolutionary", "evaluations": 12, "batch_size": 4, "executor": "local"},
              # 30 steps leave the tiny supernet's archs near chance: the floor's and the tolerance's own tests set
              # them (the strict front keeps the exports few)
              "export": {"accuracy_floor": "none", "front_tolerance": 0.0}}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = base / filename
    path.write_text(yaml.safe_dump(config))
    return path
