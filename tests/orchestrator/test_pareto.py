import itertools

import numpy as np

from orchestrator.search.pareto import crowding_distance, hypervolume, non_dominated_sort, pareto_front


def brute_front(values):
    return sorted(i for i, v in enumerate(values)
                  if not any(np.all(w <= v) and np.any(w < v) for w in values))


def test_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for m, n, seed in itertools.product((1, 2, 3, 4), (1, 40, 200), range(3)):
        values = np.random.default_rng(seed).integers(0, 6, size=(n, m)).astype(float)  # ties included
        assert pareto_front(values).tolist() == brute_front(values)
    for m in (2, 3, 4):
        values = rng.integers(0, 6, size=(40, m)).astype(float)
        fronts = non_dominated_sort(values)
        assert sorted(np.concatenate(fronts).tolist()) == list(range(40))
        for earlier, later in itertools.pairwise(fronts):
            assert not any(np.all(values[j] <= values[i]) and np.any(values[j] < values[i])
                           for i in earlier for j in later)


def monte_carlo_hv(points, reference, rng, n=200_000):
    low = points.min(axis=0)
    samples = rng.uniform(low, reference, size=(n, len(reference)))
    dominated = np.zeros(n, dtype=bool)
    for p in points:
        dominated |= np.all(samples >= p, axis=1)
    return dominated.mean() * np.prod(reference - low)


def test_hypervolume_exact_cases_and_against_monte_carlo():
    assert hypervolume(np.array([[1.0, 1.0]]), np.array([2.0, 3.0])) == 2.0
    assert hypervolume(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([2.0, 2.0])) == 3.0
    assert hypervolume(np.array([[3.0, 3.0]]), np.array([2.0, 2.0])) == 0.0  # beyond the reference
    assert hypervolume(np.zeros((0, 2)), np.array([1.0, 1.0])) == 0.0
    rng = np.random.default_rng(1)
    for m in (3, 4):
        points = rng.random((12, m))
        reference = np.ones(m) * 1.1
        exact = hypervolume(points, reference)
        assert abs(exact - monte_carlo_hv(points, reference, rng)) < 0.01 * np.prod(reference)


def test_crowding_distance_prefers_the_extremes():
    values = np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 2.0], [4.0, 0.0]])
    distance = crowding_distance(values)
    assert np.isinf(distance[0]) and np.isinf(distance[3]) and distance[2] > distance[1]


def test_best_fronts_is_the_top_of_the_non_dominated_sort():
    from orchestrator.search.pareto import best_fronts

    for m, seed in itertools.product((2, 3), range(4)):
        values = np.random.default_rng(seed).integers(0, 8, size=(150, m)).astype(float)
        fronts = non_dominated_sort(values)
        for count in (1, 10, 60, 500):
            taken = best_fronts(values, count)
            expected, k = [], 0
            while k < len(fronts) and len(expected) < count:
                expected += sorted(fronts[k].tolist())
                k += 1
            assert taken == expected
