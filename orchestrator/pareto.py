"""Pareto fronts and hypervolume over any number of objectives (all minimized here;
callers negate the ones to maximize)."""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(values: np.ndarray) -> list[np.ndarray]:
    """Fronts of indices, best first (Deb et al.'s fast non-dominated sort)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        return []
    less_equal = np.all(values[:, None, :] <= values[None, :, :], axis=2)
    strictly = np.any(values[:, None, :] < values[None, :, :], axis=2)
    dominates_matrix = less_equal & strictly  # [i, j]: i dominates j
    dominated_count = dominates_matrix.sum(axis=0)
    fronts = []
    current = np.flatnonzero(dominated_count == 0)
    while current.size:
        fronts.append(current)
        dominated_count = dominated_count - dominates_matrix[current].sum(axis=0)
        dominated_count[current] = -1
        current = np.flatnonzero(dominated_count == 0)
    return fronts


def pareto_front(values: np.ndarray) -> np.ndarray:
    fronts = non_dominated_sort(values)
    return fronts[0] if fronts else np.array([], dtype=int)


def crowding_distance(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    n, m = values.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(values[:, k], kind="stable")
        span = values[order[-1], k] - values[order[0], k]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (values[order[2:], k] - values[order[:-2], k]) / span
    return distance


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume dominated by `points` and bounded by `reference` (minimization)."""
    points = np.asarray(points, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if points.size == 0:
        return 0.0
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[pareto_front(points)]
    return _hv(points, reference)


def _hv(points: np.ndarray, reference: np.ndarray) -> float:
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:
        order = np.argsort(points[:, 0])
        volume, best_y = 0.0, reference[1]
        for x, y in points[order]:
            if y < best_y:
                volume += (reference[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    # slice along the last objective: between consecutive levels, the (m-1)-D volume of the points below
    order = np.argsort(points[:, -1])
    points = points[order]
    volume = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            below = points[: i + 1, :-1]
            volume += depth * _hv(below[pareto_front(below)], reference[:-1])
    return float(volume)
