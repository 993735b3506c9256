"""The crash torture of `bench/search/torture.py`, in a short form: the search driver killed with
SIGKILL five times, supernet training three times, at seeded kill points that count progress
(the n-th arch evaluated, the n-th database write, the n-th optimizer step or checkpoint
file), so the verdict is the same on a fast or a slow machine."""


import numpy as np
import pytest

from bench.search.torture import torture_search, torture_training
from tests.orchestrator.conftest import write_config


@pytest.mark.slow
def test_killed_five_times_the_search_loses_nothing_and_ends_as_an_uninterrupted_run(trained):
    config = write_config(trained, "torture.yaml", study="torture",
                          search={"evaluations": 24, "batch_size": 4, "strategy": "evolutionary"})
    summary = torture_search(config, kills=5, rng=np.random.default_rng(0))
    assert summary["kills"] == 5, summary
    assert {run["kill_at"][0] for run in summary["runs"]} == {"evaluate", "write"}, summary
    assert summary["complete"] == 24 and summary["running_left"] == 0
    assert summary["archs_evaluated_twice"] == 0
    assert summary["same_as_uninterrupted"], summary


@pytest.mark.slow
def test_killed_supernet_training_resumes_to_the_same_weights(trained, tmp_path):
    config = write_config(trained, "torture-train.yaml", study="torture-train",
                          supernet={"steps": 80, "checkpoint_every": 10})
    summary = torture_training(config, kills=3, rng=np.random.default_rng(1), workdir=tmp_path)
    assert summary["kills"] == 3, summary
    assert summary["same_weights_as_uninterrupted"], summary
