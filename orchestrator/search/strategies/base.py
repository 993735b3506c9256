"""What every strategy shares: the interface, the context it proposes from, and opening a trial."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import optuna

from orchestrator.search.objectives import Objectives
from orchestrator.storage.optuna_private import storage_of
from orchestrator.storage.study import Evaluation
from search_space import Arch, SearchSpace
from search_space.optuna_map import distributions, params_from_arch


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
    storage, study_id = storage_of(study)
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    return optuna.trial.Trial(study, trial_id)
