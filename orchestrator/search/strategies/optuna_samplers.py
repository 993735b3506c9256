"""Optuna's NSGA-II and TPE samplers proposing the batch, with the study's constraints."""

from __future__ import annotations

import optuna

from orchestrator.storage.optuna_private import storage_of
from search_space.optuna_map import arch_from_params, distributions


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
        handle = optuna.load_study(study_name=study.study_name, storage=storage_of(study)[0], sampler=sampler)
        proposals = []
        for _ in range(count):
            trial = handle.ask(distributions(context.space))
            proposals.append((arch_from_params(context.space, trial.params), trial))
        return proposals
