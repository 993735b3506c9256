"""A study's feasible Pareto front and its hypervolume, from the stored objective values alone: what the
search records after each batch, `status` and `resume` report."""

from __future__ import annotations

import numpy as np
import optuna

from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import hypervolume, pareto_front
from orchestrator.storage.study import REFERENCE_ATTR, ObjectiveTable, objective_table


def front_and_hypervolume(study: optuna.Study, objectives: Objectives,
                          table: ObjectiveTable | None = None) -> tuple[float, int]:
    """Hypervolume and size of the feasible front, from the objective values alone."""
    table = table or objective_table(study, len(objectives.metrics))
    values = table.values[table.feasible] * objectives.signs
    if len(values) == 0:
        return 0.0, 0
    reference = np.asarray(study.user_attrs[REFERENCE_ATTR]) * objectives.signs
    return hypervolume(values, reference), len(pareto_front(values))
