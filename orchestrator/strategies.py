"""Search strategies: small classes behind one interface, chosen by `search.strategy`.

A strategy proposes the next batch of archs and opens their trials in the
study. Everything it knows comes from the database (the evaluations so far),
and its randomness from a generator seeded by the study seed and the number of
evaluations done, so a resumed search proposes what an uninterrupted one would.

- `random`: the baseline, uniform over depth.
- `nsga2`, `tpe`: Optuna's samplers drive the same evaluations.
- `evolutionary`: predictor-guided, as LINAS does: a random first batch; then
  an accuracy predictor refit on every real evaluation, NSGA-II with the
  space's mutation and crossover over thousands of candidates scored by the
  predictors, and the next batch taken from the predicted front (not yet
  evaluated, diverse by crowding distance, optimistic in accuracy by one
  standard deviation). Confidently infeasible candidates are never proposed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna

from orchestrator.objectives import Objectives
from orchestrator.pareto import best_fronts, crowding_distance, non_dominated_sort
from orchestrator.study import Evaluation
from predictors.models import AccuracyPredictor
from search_space import Arch, SearchSpace, encode_many
from search_space.optuna_map import arch_from_params, distributions, params_from_arch

CONFIDENCE = 2.0  # standard deviations beyond a bound before a candidate counts as infeasible
MAX_FIT = 192  # evaluations the accuracy predictor is fitted on, at most (its fit runs before every batch)


@dataclass
class SearchContext:
    space: SearchSpace
    objectives: Objectives
    evaluated: list[Evaluation]  # every completed evaluation, sorted by arch key
    minimized: np.ndarray  # their objective values, minimized form, row for row
    exact_costs: Callable[[list[Arch]], list[dict[str, float]]]  # params, bytes, macs
    predict_latency: Callable[[list[Arch]], tuple[np.ndarray, np.ndarray]] | None = None  # mean, std (ms)
    taken: set[str] = field(default_factory=set)  # keys already proposed in this batch

    @functools.cached_property
    def evaluated_keys(self) -> frozenset[str]:
        return frozenset(e.key for e in self.evaluated)


class Strategy(Protocol):
    name: str

    def propose(self, context: SearchContext, study: optuna.Study, count: int,
                rng: np.random.Generator) -> list[tuple[Arch, optuna.Trial]]: ...


def ask_fixed(study: optuna.Study, space: SearchSpace, arch: Arch) -> optuna.Trial:
    """Open a RUNNING trial whose params are exactly `arch`'s, in one insert (enqueue_trial + ask
    would scan every trial of the study to find the waiting one)."""
    template = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params=params_from_arch(space, arch),
                                         distributions=distributions(space))
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.trial.Trial(study, trial_id)


def _fresh_random(context: SearchContext, count: int, rng: np.random.Generator) -> list[Arch]:
    seen = set(context.evaluated_keys | context.taken)
    archs: list[Arch] = []
    for _ in range(100 * count):
        if len(archs) == count:
            break
        arch = context.space.sample(rng)
        if arch.key not in seen:
            seen.add(arch.key)
            archs.append(arch)
    return archs


class RandomStrategy:
    name = "random"

    def propose(self, context, study, count, rng):
        return [(arch, ask_fixed(study, context.space, arch)) for arch in _fresh_random(context, count, rng)]


class OptunaStrategy:
    """NSGA-II or TPE from Optuna, with the study's constraints."""

    def __init__(self, name: str):
        self.name = name

    def propose(self, context, study, count, rng):
        seed = int(rng.integers(2**31))
        if self.name == "nsga2":
            # the study's constraints reach the samplers through each trial's set_constraint
            sampler = optuna.samplers.NSGAIISampler(population_size=max(8, 2 * count), seed=seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                                 n_startup_trials=max(8, count))
        handle = optuna.load_study(study_name=study.study_name, storage=study._storage, sampler=sampler)
        proposals = []
        for _ in range(count):
            trial = handle.ask(distributions(context.space))
            proposals.append((arch_from_params(context.space, trial.params), trial))
        return proposals


def search_accuracy_predictor(n_fit: int, random_state: int) -> AccuracyPredictor:
    """The accuracy predictor the evolutionary strategy fits before each batch: ridge or 100 boosted
    trees, chosen by CV. On mnist1d (bench/accuracy_predictor.py) the Gaussian process this used
    before ranked held-out archs at Kendall tau 0.72 and this one at 0.86; on 192 archs it fits in
    less time than the GP did."""
    return AccuracyPredictor(candidates=("ridge", "gbm"), cv=max(2, min(4, n_fit // 4)), random_state=random_state,
                             gbm_trees=100)


class EvolutionaryStrategy:
    name = "evolutionary"

    def __init__(self, population: int = 64, generations: int = 20, mutation_prob: float = 0.15):
        self.population = population
        self.generations = generations
        self.mutation_prob = mutation_prob

    def propose(self, context, study, count, rng):
        evaluated = context.evaluated
        if len(evaluated) < max(2 * count, 8):  # too little data to fit a predictor: seeded random batch
            return RandomStrategy().propose(context, study, count, rng)
        archs = self.search(context, count, rng)
        return [(arch, ask_fixed(study, context.space, arch)) for arch in archs]

    def search(self, context: SearchContext, count: int, rng: np.random.Generator) -> list[Arch]:
        space = context.space
        evaluated = context.evaluated
        best = best_fronts(context.minimized, max(MAX_FIT // 2, self.population // 2))
        # beyond MAX_FIT, fit on the best ones and a sample of the rest
        rest = np.setdiff1d(np.arange(len(evaluated)), best[: MAX_FIT // 2])
        fit = best[: MAX_FIT // 2] + sorted(rng.permutation(rest)[: MAX_FIT // 2].tolist())
        accuracy = np.array([evaluated[i].metrics["accuracy"] for i in fit])
        predictor = search_accuracy_predictor(len(fit), random_state=int(rng.integers(2**31)))
        predictor.fit(encode_many(space, [evaluated[i].arch for i in fit]), accuracy)
        scorer = _Scorer(context, predictor)
        # the first population: the best evaluated archs (by their real front) plus random ones
        elite = [evaluated[i].arch for i in best][: self.population // 2]
        population = elite + [space.sample(rng) for _ in range(self.population - len(elite))]
        archive: dict[str, Arch] = {a.key: a for a in population}
        for _ in range(self.generations):
            values, _ = scorer(population)
            rank = np.empty(len(population))
            for level, front in enumerate(non_dominated_sort(values)):
                rank[front] = level
            children = []
            while len(children) < self.population:
                a, b = (population[self._tournament(rank, rng)] for _ in range(2))
                child = space.mutate(space.crossover(a, b, rng), self.mutation_prob, rng)
                children.append(child)
                archive.setdefault(child.key, child)
            merged = _unique(population + children)
            population = [merged[i] for i in _select(scorer(merged)[0], self.population)]
        excluded = context.evaluated_keys | context.taken
        candidates = [a for key, a in archive.items() if key not in excluded]
        values, feasible = scorer(candidates)
        candidates = [a for a, ok in zip(candidates, feasible, strict=True) if ok]
        values = values[feasible]
        return [candidates[i] for i in _select(values, count)]

    @staticmethod
    def _tournament(rank: np.ndarray, rng: np.random.Generator) -> int:
        i, j = rng.integers(len(rank), size=2)
        return int(i if rank[i] <= rank[j] else j)


def _unique(archs: list[Arch]) -> list[Arch]:
    return list({a.key: a for a in archs}.values())


def _select(values: np.ndarray, count: int) -> list[int]:
    """Best fronts first; within the front that overflows, the most isolated points."""
    chosen: list[int] = []
    for front in non_dominated_sort(values):
        if len(chosen) + len(front) <= count:
            chosen += front.tolist()
        else:
            distance = crowding_distance(values[front])
            chosen += front[np.argsort(-distance, kind="stable")][: count - len(chosen)].tolist()
        if len(chosen) >= count:
            break
    return chosen


class _Scorer:
    """Predicted objectives (minimized) of candidate archs, and which are not confidently infeasible."""

    def __init__(self, context: SearchContext, predictor: AccuracyPredictor):
        self.context = context
        self.predictor = predictor
        self._scored: dict[str, tuple[np.ndarray, bool]] = {}  # survivors are scored again each generation

    def __call__(self, archs: list[Arch]) -> tuple[np.ndarray, np.ndarray]:
        new = list({a.key: a for a in archs if a.key not in self._scored}.values())
        if new:
            values, feasible = self._score(new)
            self._scored.update(zip([a.key for a in new], zip(values, feasible, strict=True), strict=True))
        rows = [self._scored[a.key] for a in archs]
        return np.array([r[0] for r in rows]).reshape(len(archs), -1), np.array([r[1] for r in rows], dtype=bool)

    def _score(self, archs: list[Arch]) -> tuple[np.ndarray, np.ndarray]:
        context = self.context
        mean, std = self.predictor.predict(encode_many(context.space, archs), return_std=True)
        columns: dict[str, Any] = {"accuracy": (mean, std)}
        if context.predict_latency is not None:
            columns["latency_ms"] = context.predict_latency(archs)
        exact = context.exact_costs(archs)
        for metric in ("params", "bytes", "macs"):
            values = np.array([row[metric] for row in exact], dtype=float)
            columns[metric] = (values, np.zeros_like(values))
        objective_rows = []
        for metric, direction in zip(context.objectives.metrics, context.objectives.directions, strict=True):
            mu, sigma = columns[metric]
            optimistic = mu + sigma if direction == "maximize" else mu - sigma
            objective_rows.append(-optimistic if direction == "maximize" else optimistic)
        values = np.stack(objective_rows, axis=1)
        feasible = np.ones(len(archs), dtype=bool)
        for constraint in context.objectives.constraints:
            mu, sigma = columns[constraint.metric]
            if constraint.op == "<=":
                feasible &= mu - CONFIDENCE * sigma <= constraint.bound
            else:
                feasible &= mu + CONFIDENCE * sigma >= constraint.bound
        values[~feasible] += 1e9  # infeasible candidates rank behind every feasible one
        return values, feasible


def make_strategy(name: str) -> Strategy:
    if name == "random":
        return RandomStrategy()
    if name in ("nsga2", "tpe"):
        return OptunaStrategy(name)
    if name == "evolutionary":
        return EvolutionaryStrategy()
    raise ValueError(f"unknown strategy {name!r}")
