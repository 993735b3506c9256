"""The learning-curve stopper's rule and the candidates of a front, without Ray."""

import numpy as np
import pytest

from orchestrator.finetune.candidates import FinetuneError, choose_candidates
from orchestrator.finetune.schedulers import DominanceRule
from orchestrator.search.objectives import Objectives
from orchestrator.storage.study import Evaluation
from search_space import Arch


def _rule(*curves, min_gain=0.0):
    """A rule that has seen each (name, cost, accuracies, ended) curve."""
    rule = DominanceRule(rungs=6, grace_rungs=2, confidence=0.95, seed=0, min_gain=min_gain, samples=500)
    for name, cost, accuracies, ended in curves:
        for rung, accuracy in enumerate(accuracies, start=1):
            rule.observe(name, cost, rung, accuracy)
        if ended:
            rule.end(name)
    return rule


def test_a_plateaued_costlier_candidate_is_stopped_by_a_cheaper_better_one():
    rule = _rule(("cheap", 1.0, [0.80, 0.86, 0.88, 0.89, 0.895, 0.90], True),
                 ("costly", 2.0, [0.50, 0.51, 0.51], False))
    assert rule.dominated("costly") == "cheap"
    assert rule.dominated("cheap") is None  # a costlier candidate never dominates a cheaper one


def test_a_climbing_or_young_candidate_goes_on():
    rule = _rule(("cheap", 1.0, [0.80, 0.82, 0.83, 0.84, 0.845, 0.85], True),
                 ("climbing", 2.0, [0.60, 0.75, 0.83], False), ("young", 3.0, [0.2], False))
    assert rule.dominated("climbing") is None
    assert rule.dominated("young") is None  # fewer rungs than the grace


def test_min_gain_stops_a_candidate_that_would_end_level_with_a_cheaper_one():
    curves = [("cheap", 1.0, [0.80, 0.85, 0.87, 0.88, 0.885, 0.89], True),
              ("level", 2.0, [0.88, 0.885, 0.887, 0.888], False)]
    assert _rule(*curves).dominated("level") is None  # it may still end a little above
    assert _rule(*curves, min_gain=0.02).dominated("level") == "cheap"


def _evaluation(trial, accuracy, latency, embed=16):
    arch = Arch.from_dict({"embed_dim": embed, "layers": [
        {"num_heads": 1, "mlp_dim": 16, "attention": "softmax", "bits": 32}] * (trial % 2 + 1)})
    return Evaluation(trial, arch, {"accuracy": accuracy, "latency_ms": latency}, True)


def test_candidates_are_the_front_and_the_archs_near_it():
    objectives = Objectives.from_config({"accuracy": "maximize", "latency_ms": "minimize"}, [])
    done = [_evaluation(0, 0.80, 1.0), _evaluation(1, 0.90, 2.0), _evaluation(2, 0.895, 2.5, embed=32),
            _evaluation(3, 0.50, 3.0, embed=32)]
    chosen = choose_candidates(done, objectives, "s", margin=0.01, max_candidates=10)
    assert [c.trial for c in chosen] == [0, 1, 2]  # trial 3 lacks 40 points
    assert [c.on_front for c in chosen] == [True, True, False]
    assert [c.reference_accuracy for c in chosen] == [0.0, 0.80, 0.90]
    assert np.isclose(chosen[1].margin(0.93), 0.13)
    infeasible = [Evaluation(e.trial, e.arch, e.metrics, False) for e in done]
    with pytest.raises(FinetuneError, match="no feasible front"):
        choose_candidates(infeasible, objectives, "s", margin=0.01, max_candidates=10)
    only_accuracy = Objectives.from_config({"accuracy": "maximize"}, [])
    with pytest.raises(FinetuneError, match="no cost objective"):
        choose_candidates(done, only_accuracy, "s", margin=0.01, max_candidates=10)


def test_a_non_finite_curve_trains_on_said_once_and_judges_no_one(caplog):
    rule = _rule(("cheap", 1.0, [0.80, float("nan"), 0.88, 0.89, 0.895, 0.90], True),
                 ("costly", 2.0, [0.50, 0.51, 0.51], False), ("broken", 3.0, [0.4, float("inf"), 0.4], False))
    assert rule.dominated("costly") is None  # its only cheaper rival's curve cannot be trusted
    assert rule.dominated("broken") is None
    rule.observe("broken", 3.0, 4, float("nan"))
    said = [r.message for r in caplog.records if "non-finite" in r.message]
    assert len(said) == 2 and any("broken"[:8] in m for m in said)


def test_the_families_stay_available_behind_the_same_rule():
    from orchestrator.finetune.schedulers import curve_extrapolator

    rule = DominanceRule(rungs=6, grace_rungs=2, confidence=0.95, seed=0, samples=500,
                         extrapolator=curve_extrapolator("families", samples=500))
    for rung, accuracy in enumerate([0.80, 0.86, 0.88, 0.89, 0.895, 0.90], start=1):
        rule.observe("cheap", 1.0, rung, accuracy)
    rule.end("cheap")
    for rung, accuracy in enumerate([0.50, 0.51, 0.51], start=1):
        rule.observe("costly", 2.0, rung, accuracy)
    assert rule.dominated("costly") == "cheap"
