"""A search on a real two-node Ray cluster (started and stopped by `bench/ray_cluster.py`)."""

import sys

import pytest

from tests.conftest import ROOT
from tests.orchestrator.conftest import write_config

sys.path.insert(0, str(ROOT / "bench"))
from ray_cluster import search_on_cluster  # noqa: E402


@pytest.mark.slow
def test_trials_run_on_both_nodes_and_measurements_only_on_the_target_node(trained):
    config = write_config(trained, "cluster.yaml", study="cluster",
                          search={"evaluations": 8, "batch_size": 8, "strategy": "random",
                                  "finetune_steps": 40})  # trials long enough to overlap
    summary = search_on_cluster(config, workers=4)
    assert summary["complete"] == 8, summary
    assert set(summary["evaluated_on"]) == {"head", "target node"}, summary
    assert set(summary["measured_on"]) == {"target node"}, summary
