"""Searches on a real two-node Ray cluster (started and stopped by `bench/search/ray_cluster.py`): where
things run, and what happens when a node is stopped midway. The moments are progress (every
worker holds a job; a measurement is under way), not seconds."""


import optuna
import pytest

from bench.search.ray_cluster import search_losing_a_node, search_losing_the_target, search_on_cluster
from orchestrator.cli import main
from tests.orchestrator.conftest import write_config

# pytest's 300 s timeout only ends hangs; these take up to 90 s pinned to one core here, so a machine
# 3x slower (and drifting) would cross it: they get three times that margin
pytestmark = pytest.mark.timeout(900)



def cluster_config(trained, tmp_path, name, **changes):
    """A study in a database of its own, with the target measured: no evaluation is cached there, so
    every arch of a batch is a job, and every worker gets one (the tests' meeting point counts on it)."""
    config = write_config(trained, f"{name}.yaml", study=name, storage=f"sqlite:///{tmp_path / 'cluster.db'}",
                          **changes)
    assert main(["measure", "-c", str(config), "--no-progress"]) == 0
    return config


@pytest.mark.slow
def test_trials_run_on_both_nodes_and_measurements_only_on_the_target_node(trained, tmp_path):
    config = cluster_config(trained, tmp_path, "cluster", search={"evaluations": 8, "batch_size": 8, "strategy": "random"})
    summary = search_on_cluster(config, workers=4)
    assert summary["complete"] == 8, summary
    assert set(summary["evaluated_on"]) == {"head", "target node"}, summary
    assert set(summary["measured_on"]) == {"target node"}, summary


@pytest.mark.slow
def test_a_worker_node_stopped_mid_search_loses_nothing_and_the_head_finishes(trained, tmp_path):
    config = cluster_config(trained, tmp_path, "lose-node", ray={"retries": 2},
                            search={"evaluations": 16, "batch_size": 8, "strategy": "random", "seed": 5})
    summary = search_losing_a_node(config, workers=4)
    assert summary["exit"] == 0, summary
    assert summary["complete"] == 16 and summary["archs_evaluated_twice"] == 0, summary
    assert summary["failed"] == 0 and summary["running_left"] == 0, summary
    assert summary["evaluated_on"].get("head", 0) >= 8, summary  # the second batch ran on the head alone
    local = write_config(trained, "lose-node-local.yaml", study="lose-node-local",
                         storage=f"sqlite:///{tmp_path / 'cluster.db'}",
                         search={"evaluations": 16, "batch_size": 8, "strategy": "random", "seed": 5,
                                 "executor": "local"})
    assert main(["search", "-c", str(local), "--no-progress"]) == 0
    uninterrupted = optuna.load_study(study_name="lose-node-local", storage=f"sqlite:///{tmp_path / 'cluster.db'}")
    assert summary["results"] == sorted((t.user_attrs["arch_key"], tuple(t.values))
                                        for t in uninterrupted.get_trials(deepcopy=False)
                                        if t.state.name == "COMPLETE")


@pytest.mark.slow
def test_the_target_node_stopped_mid_measurement_stops_with_one_line_and_resumes(trained, tmp_path):
    config = cluster_config(trained, tmp_path, "lose-target",
                            search={"evaluations": 8, "batch_size": 4, "strategy": "random", "seed": 9})
    summary = search_losing_the_target(config, workers=4)
    stopped = summary["stopped"]
    assert stopped["exit"] == 1 and len(stopped["error_lines"]) == 1, summary
    assert "holds target 'cpu-b1'" in stopped["error_lines"][0] and "resume" in stopped["error_lines"][0]
    assert stopped["complete"] == 0 and stopped["running"] == 4, summary  # the batch, for resume to run again
    assert summary["resume_exit"] == 0, summary
    assert summary["complete"] == 8 and summary["archs_evaluated_twice"] == 0 and summary["running_left"] == 0
    assert set(summary["measured_on"]) <= {"new target node"}, summary
