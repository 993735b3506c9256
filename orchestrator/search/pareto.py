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
    """Indices (ascending) of the non-dominated rows. Rows are visited in lexicographic
    order, where no row can be dominated by a later one, so each is checked only
    against the front so far: O(n * front) instead of the O(n^2) of a full sort,
    which matters for a study of 100,000 trials."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.array([], dtype=int)
    if values.shape[1] == 2:
        # sorted by (x, y), a row is on the front iff its y is below the y of every earlier row
        # that is not identical to it (identical rows share their fate)
        order = np.lexsort((values[:, 1], values[:, 0]))
        xs, ys = values[order, 0], values[order, 1]
        new_row = np.ones(len(order), dtype=bool)
        new_row[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
        group_start = np.maximum.accumulate(np.where(new_row, np.arange(len(order)), 0))
        lowest_before = np.concatenate([[np.inf], np.minimum.accumulate(ys)[:-1]])
        return np.sort(order[ys < lowest_before[group_start]])
    order = np.lexsort(values.T[::-1])
    front = np.empty((0, values.shape[1]))
    kept = []
    for i in order:
        row = values[i]
        if not np.any(np.all(front <= row, axis=1) & np.any(front < row, axis=1)):
            kept.append(i)
            front = np.vstack([front, row])
    return np.sort(np.asarray(kept, dtype=int))


def best_fronts(values: np.ndarray, count: int) -> list[int]:
    """Indices of whole fronts, best first, until at least `count` are taken (or all are):
    the top of a non-dominated sort without sorting everything."""
    values = np.asarray(values, dtype=float)
    remaining = np.arange(len(values))
    taken: list[int] = []
    while remaining.size and len(taken) < count:
        front = remaining[pareto_front(values[remaining])]
        taken += front.tolist()
        remaining = np.setdiff1d(remaining, front, assume_unique=True)
    return taken


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
