"""Property-based: sampling and variation always stay inside the space."""

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_space import Arch, SearchSpace, encode, feature_names
from search_space.optuna_map import arch_from_params, distributions, params_from_arch, suggest_arch
from tests.conftest import CONFIGS

SPACES = {name: SearchSpace.from_yaml(CONFIGS / "spaces" / f"{name}.yaml")
          for name in ("tiny", "digits", "autoformer_tiny", "hat_encoder", "flexibert", "digits_stages")}
space_names = st.sampled_from(sorted(SPACES))
seeds = st.integers(0, 2**32 - 1)
modes = st.sampled_from(["depth_uniform", "arch_uniform"])


@settings(max_examples=60, deadline=None)
@given(space_names, seeds, modes)
def test_samples_are_valid_and_round_trip(name, seed, mode):
    space = SPACES[name]
    arch = space.sample(np.random.default_rng(seed), mode)
    assert space.contains(arch)
    assert Arch.from_json(arch.to_json()) == arch
    assert space.decode(space.genome(arch)) == arch


@settings(max_examples=60, deadline=None)
@given(space_names, seeds, st.floats(0, 1))
def test_mutation_and_crossover_stay_valid(name, seed, prob):
    space = SPACES[name]
    rng = np.random.default_rng(seed)
    a, b = space.sample(rng), space.sample(rng)
    assert space.contains(space.mutate(a, prob, rng))
    child = space.crossover(a, b, rng)
    assert space.contains(child)


@settings(max_examples=40, deadline=None)
@given(space_names, seeds)
def test_encoding_length_is_constant_and_bounded(name, seed):
    space = SPACES[name]
    rng = np.random.default_rng(seed)
    n = len(feature_names(space))
    for arch in (space.sample(rng), space.smallest(), space.largest()):
        features = encode(space, arch)
        assert features.shape == (n,)
        assert features.min() >= 0 and features.max() <= 1


@settings(max_examples=60, deadline=None)
@given(space_names, seeds)
def test_optuna_params_round_trip(name, seed):
    space = SPACES[name]
    arch = space.sample(np.random.default_rng(seed))
    params = params_from_arch(space, arch)
    assert set(params) == set(distributions(space))
    for param, value in params.items():
        assert value in distributions(space)[param].choices
    assert arch_from_params(space, params) == arch


def test_sampling_is_reproducible_from_the_seed(digits_space):
    first = [digits_space.sample(np.random.default_rng(7)).key for _ in range(3)]
    again = [digits_space.sample(np.random.default_rng(7)).key for _ in range(3)]
    assert first == again
    rng = np.random.default_rng(7)
    assert len({digits_space.sample(rng).key for _ in range(20)}) > 15


def test_depth_uniform_mode_makes_small_models_common(digits_space):
    rng = np.random.default_rng(0)
    depths = np.array([digits_space.sample(rng, "depth_uniform").depth for _ in range(2000)])
    assert abs((depths == 1).mean() - 0.25) < 0.04
    rng = np.random.default_rng(0)
    depths = np.array([digits_space.sample(rng, "arch_uniform").depth for _ in range(2000)])
    assert (depths == 1).mean() < 0.01  # 54 single-layer archs per embed dim out of ~8.7M


def test_mutation_probability_zero_and_one(digits_space):
    rng = np.random.default_rng(3)
    arch = digits_space.sample(rng)
    assert digits_space.mutate(arch, 0.0, rng) == arch
    assert digits_space.genome(digits_space.mutate(arch, 1.0, rng))[0] != digits_space.genome(arch)[0]


def test_inactive_layers_are_masked_not_averaged(digits_space):
    names = feature_names(digits_space)
    arch = digits_space.smallest()
    features = dict(zip(names, encode(digits_space, arch), strict=True))
    assert features["layer0.active"] == 1.0
    assert all(v == 0.0 for k, v in features.items() if k.startswith(("layer1.", "layer2.", "layer3.")))
    assert features["layer0.mixer=softmax"] == 1.0 and features["layer0.bits=32"] == 1.0


def test_optuna_trial_suggests_a_valid_arch(digits_space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        arch = suggest_arch(digits_space, trial)
        assert digits_space.contains(arch)
        assert arch_from_params(digits_space, trial.params) == arch
        study.tell(trial, 0.0)


def test_bad_params_are_refused(digits_space):
    from search_space import SpaceError

    params = params_from_arch(digits_space, digits_space.largest())
    with pytest.raises(SpaceError, match="layer0.bits"):
        arch_from_params(digits_space, {**params, "layer0.bits": 5})
    with pytest.raises(SpaceError, match="missing 'depth'"):
        arch_from_params(digits_space, {k: v for k, v in params.items() if k != "depth"})
