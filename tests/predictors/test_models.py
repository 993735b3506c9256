import json

import numpy as np
import pytest

from predictors.dataset import stratified_archs
from predictors.features import latency_feature_names, latency_features
from predictors.models import CANDIDATES, AccuracyPredictor, LatencyPredictor, scores
from predictors.persist import (
    ArtifactError,
    load_predictor,
    predictor_from_state,
    predictor_state,
    save_predictor,
    state_bytes,
)
from predictors.target import HardwareTarget
from search_space import encode_many
from tests.supernet.test_model import FEATURES


def synthetic_latency(X: np.ndarray, names: list[str], rng) -> np.ndarray:
    """An additive ground truth with per-call overheads, plus 1% noise."""
    weights = {n: (2e-3 if n.startswith("calls:") else 3e-7 if "@8" in n else 1e-6 if n.startswith(("linear", "mixing"))
                   else 0.0) for n in names}
    clean = 0.05 + X @ np.array([weights[n] for n in names])
    return clean * (1 + 0.01 * rng.standard_normal(len(clean)))


def test_latency_predictor_learns_an_additive_cost(digits_space):
    rng = np.random.default_rng(0)
    archs = stratified_archs(digits_space, 160, rng)
    names = latency_feature_names(digits_space)
    X = latency_features(digits_space, FEATURES, HardwareTarget(), archs)
    y = synthetic_latency(X, names, rng)
    predictor = LatencyPredictor(candidates=("ridge", "gbm"), cv=4).fit(X[:120], y[:120])
    assert predictor.chosen_ == "ridge" and set(predictor.cv_scores_) == {"ridge", "gbm"}
    result = predictor.score(X[120:], y[120:])
    assert result.mape < 3 and result.kendall_tau > 0.9
    mean, std = predictor.predict(X[120:], return_std=True)
    assert mean.shape == std.shape == (40,) and np.all(std >= 0)


def test_accuracy_predictor_with_gp_uncertainty(digits_space):
    rng = np.random.default_rng(1)
    archs = [digits_space.sample(rng) for _ in range(80)]
    X = encode_many(digits_space, archs)
    y = 0.6 + 0.3 * X[:, 0] + 0.05 * X[:, 1] + 0.01 * rng.standard_normal(80)
    predictor = AccuracyPredictor(candidates=("gp", "ridge"), cv=4).fit(X[:60], y[:60])
    mean, std = predictor.predict(X[60:], return_std=True)
    assert np.all(std > 0) and predictor.score(X[60:], y[60:]).rmse < 0.05
    far = np.ones((1, X.shape[1])) * 3  # outside the data: less certain
    assert predictor.predict(far, return_std=True)[1][0] > np.median(std) or predictor.chosen_ == "ridge"


def synthetic_accuracy(archs, rng) -> np.ndarray:
    """Each active layer helps by its attention type; its width helps softmax layers only."""
    gain = {"softmax": 0.03, "local": 0.02, "linear": 0.005}
    clean = np.array([0.5 + 0.05 * a.embed_dim / 128
                      + sum(gain[x.mixer] * (1 + (x.mixer == "softmax") * x.mlp_dim / 512) for x in a.layers)
                      for a in archs])
    return clean + 0.003 * rng.standard_normal(len(archs))


def test_search_accuracy_predictor_ranks_held_out_archs(digits_space):
    from orchestrator.search.strategies.evolutionary import search_accuracy_predictor

    rng = np.random.default_rng(2)
    archs = list({a.key: a for a in (digits_space.sample(rng) for _ in range(400))}.values())[:300]
    X, y = encode_many(digits_space, archs), synthetic_accuracy(archs, rng)
    predictor = search_accuracy_predictor(100, random_state=0).fit(X[:100], y[:100])
    assert predictor.chosen_ in ("ridge", "gbm") and predictor.get_params()["gbm_trees"] == 100
    assert predictor.score(X[100:], y[100:]).kendall_tau >= 0.8
    mean, std = predictor.predict(X[100:], return_std=True)
    assert mean.shape == std.shape == (200,) and np.all(std >= 0) and np.any(std > 0)


def test_predictor_validates_at_fit():
    with pytest.raises(ValueError, match="positive"):
        LatencyPredictor().fit(np.ones((10, 2)), -np.ones(10))
    with pytest.raises(ValueError, match="at least"):
        LatencyPredictor().fit(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError):
        LatencyPredictor().fit(np.full((10, 2), np.nan), np.ones(10))
    fitted = LatencyPredictor(candidates=("ridge",), cv=3).fit(np.random.default_rng(0).random((12, 2)), np.arange(1, 13))
    with pytest.raises(ValueError, match="expected 2 features"):
        fitted.predict(np.ones((1, 3)))
    assert LatencyPredictor(cv=7).get_params()["cv"] == 7  # constructor only stores
    for trees in (0, 2.5, True):
        with pytest.raises(ValueError, match="gbm_trees must be a positive integer"):
            AccuracyPredictor(gbm_trees=trees).fit(np.random.default_rng(0).random((12, 2)), np.arange(12.0))


def test_scores():
    s = scores(np.array([1.0, 2.0, 4.0]), np.array([1.1, 1.8, 4.0]))
    assert abs(s.mape - (10 + 10 + 0) / 3) < 1e-9 and s.kendall_tau == 1.0 and s.spearman == 1.0


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_a_predictor_is_stored_as_data_and_loads_to_the_same_model(tmp_path, candidate):
    rng = np.random.default_rng(0)
    X, y = rng.random((30, 3)), rng.random(30) + 1
    predictor = LatencyPredictor(candidates=("ridge", candidate) if candidate != "ridge" else ("ridge",),
                                 cv=3).fit(X, y)
    predictor = LatencyPredictor(candidates=(candidate,), cv=3).fit(X, y) if predictor.chosen_ != candidate \
        else predictor
    record = save_predictor(predictor, tmp_path / "p.json", {"target": "cpu"})
    assert record["n_train"] == 30 and record["chosen"] == candidate and "mape" in record["cv_scores"][candidate]
    assert b"\\x80" not in (tmp_path / "p.json").read_bytes()  # plain JSON text
    loaded, _ = load_predictor(tmp_path / "p.json", record["sha256"])
    probe = rng.random((5, 3))
    for a, b in zip(loaded.predict(probe, return_std=True), predictor.predict(probe, return_std=True), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.cv_scores_ == predictor.cv_scores_ and loaded.get_params() == predictor.get_params()


def test_a_stored_predictor_keeps_every_candidates_scores_and_its_choice(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((40, 2))
    predictor = LatencyPredictor(candidates=("ridge", "gbm"), cv=4, gbm_trees=20).fit(X, 1 + X @ [2.0, 0.5])
    loaded = predictor_from_state(json.loads(state_bytes(predictor_state(predictor))))
    assert set(loaded.cv_scores_) == {"ridge", "gbm"} and loaded.chosen_ == predictor.chosen_
    assert loaded.get_params()["candidates"] == ("ridge", "gbm")
    np.testing.assert_array_equal(loaded.predict(X), predictor.predict(X))


class _RunsCode:
    """Unpickling this creates the file it names: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_altered_and_crafted_predictor_files_are_refused_and_run_nothing(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    predictor = LatencyPredictor(candidates=("ridge",), cv=3).fit(rng.random((12, 2)), rng.random(12) + 1)
    path = tmp_path / "p.json"
    record = save_predictor(predictor, path)
    with pytest.raises(ArtifactError, match="does not match"):
        load_predictor(path, "0" * 64)
    document = json.loads(path.read_text())
    document["state"]["y"][0] += 1.0
    path.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="does not match"):
        load_predictor(path)
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ArtifactError, match="not a predictor file"):
        load_predictor(path)
    assert not marker.exists()
    with pytest.raises(ArtifactError, match="no such file"):
        load_predictor(tmp_path / "absent.json")
    assert record["sha256"] != "0" * 64


def _state(**changes):
    rng = np.random.default_rng(0)
    predictor = LatencyPredictor(candidates=("ridge",), cv=3).fit(rng.random((12, 2)), rng.random(12) + 1)
    return {**json.loads(state_bytes(predictor_state(predictor))), **changes}


@pytest.mark.parametrize("changes, field", [
    ({"kind": "os.system"}, "kind"), ({"kind": ["LatencyPredictor"]}, "kind"), ({"version": 1}, "version"),
    ({"chosen": "gp"}, "chosen"), ({"X": [[1.0, "x"]] * 12}, "X"), ({"X": [[1.0, 2.0]] * 11 + [[1.0]]}, "X"),
    ({"y": [float("nan")] * 12}, "y"), ({"y": [1.0]}, "same length"), ({"X": [], "y": []}, "same length"),
    ({"cv_scores": {}}, "cv_scores"), ({"params": {"cv": 3}}, "params"), ({"extra": 1}, "fields"),
])
def test_malformed_predictor_states_are_refused_naming_the_field(changes, field):
    with pytest.raises(ArtifactError, match=field):
        predictor_from_state(_state(**changes))


def test_malformed_predictor_params_are_refused():
    state = _state()
    for name, value in [("candidates", ["ridge", "__import__"]), ("candidates", []), ("cv", True), ("cv", 10**9),
                        ("random_state", -1), ("log_target", "yes"), ("select_by", "r2"), ("gbm_trees", 0)]:
        bad = {**state, "params": {**state["params"], name: value}}
        with pytest.raises(ArtifactError, match=f"params.{name}"):
            predictor_from_state(bad)


def test_stratified_archs_cover_the_range(digits_space):
    archs = stratified_archs(digits_space, 72, np.random.default_rng(0))
    assert len({a.key for a in archs}) == 72
    assert {a.depth for a in archs} == set(digits_space.depths)
    assert {a.embed_dim for a in archs} == set(digits_space.embed_dims)
    homogeneous = [a for a in archs if len({x.bits for x in a.layers}) == 1 and a.depth > 1]
    assert {a.layers[0].bits for a in homogeneous} == {32, 8}
    assert {x.mixer for a in archs for x in a.layers} == {"softmax", "linear", "local"}
