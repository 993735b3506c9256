"""Which archs of a study are fine-tuned, and the one metric a scheduler ranks them by.

The candidates are the feasible front of the search (inherited accuracy against
the study's other objectives) and the archs that `margin` more accuracy would
put on it, nearest first, at most `max_candidates` (the front is kept whole when
it fits, else thinned evenly along its cost).

The derived metric, the **front margin**: a candidate's validation accuracy
minus the best inherited accuracy of the front members strictly cheaper than it
in the study's first cost objective (0 when none is: the fastest member competes
with nothing but the hypervolume's reference, accuracy 0). A positive margin
means the candidate still earns its extra cost against the search's front; ASHA
keeps the candidates with the largest margins at each rung.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.search.objectives import Objectives
from orchestrator.search.pareto import pareto_front
from orchestrator.storage.study import Evaluation
from search_space import Arch, InputError


class FinetuneError(InputError):
    """Nothing to fine-tune, or settings that cannot fine-tune this study."""


@dataclass(frozen=True)
class Candidate:
    trial: int
    arch: Arch
    metrics: dict  # the search's metrics (accuracy: inherited)
    cost: float  # the first cost objective (latency where the study has it)
    on_front: bool
    reference_accuracy: float  # the best inherited accuracy strictly cheaper on the front

    @property
    def key(self) -> str:
        return self.arch.key

    def margin(self, accuracy: float) -> float:
        return accuracy - self.reference_accuracy


def cost_metric(objectives: Objectives, study: str) -> str:
    if "accuracy" not in objectives.metrics or dict(zip(objectives.metrics, objectives.directions,
                                                        strict=True))["accuracy"] != "maximize":
        raise FinetuneError(f"study {study!r} does not maximize accuracy: fine-tuning has nothing to improve")
    costs = [m for m, d in zip(objectives.metrics, objectives.directions, strict=True) if d == "minimize"]
    if not costs:
        raise FinetuneError(f"study {study!r} has no cost objective beside accuracy: its front is one arch, "
                            f"there is no front to fine-tune")
    return costs[0]


def choose_candidates(done: list[Evaluation], objectives: Objectives, study: str, margin: float,
                      max_candidates: int) -> list[Candidate]:
    cost = cost_metric(objectives, study)
    unique = list({e.arch.key: e for e in reversed(done)}.values())[::-1]  # the first trial of each arch
    feasible = [e for e in unique if e.feasible]
    if not feasible:
        raise FinetuneError(f"study {study!r} has no feasible front: none of its {len(unique)} evaluated archs "
                            f"meets the constraints; nothing to fine-tune")
    values = objectives.minimized([e.metrics for e in feasible])
    front = set(pareto_front(values).tolist())
    accuracy = list(objectives.metrics).index("accuracy")
    near = []  # (accuracy it lacks to join the front, index)
    for i in range(len(feasible)):
        if i in front:
            continue
        raised = values[i].copy()
        raised[accuracy] -= margin  # minimized form: more accuracy is a smaller value
        others = values[sorted(front)]
        dominated = np.any(np.all(others <= raised, axis=1) & np.any(others < raised, axis=1))
        if not dominated:
            near.append((_gap(values[i], others, accuracy), i))
    chosen = sorted(front, key=lambda i: feasible[i].metrics[cost])
    if len(chosen) > max_candidates:
        keep = np.unique(np.round(np.linspace(0, len(chosen) - 1, max_candidates)).astype(int))
        chosen = [chosen[k] for k in keep]
    chosen += [i for _, i in sorted(near)][:max(0, max_candidates - len(chosen))]
    members = [(feasible[i].metrics[cost], feasible[i].metrics["accuracy"]) for i in front]
    return [Candidate(feasible[i].trial, feasible[i].arch, dict(feasible[i].metrics), float(feasible[i].metrics[cost]),
                      i in front, _reference(members, feasible[i].metrics[cost]))
            for i in sorted(chosen, key=lambda i: feasible[i].trial)]


def _gap(row: np.ndarray, front: np.ndarray, accuracy: int) -> float:
    """The accuracy `row` lacks to be undominated: the least over the members that dominate it."""
    dominating = np.all(front <= row, axis=1)
    return float(np.max(row[accuracy] - front[dominating, accuracy])) if dominating.any() else 0.0


def _reference(members: list[tuple[float, float]], cost: float) -> float:
    cheaper = [acc for member_cost, acc in members if member_cost < cost]
    return max(cheaper, default=0.0)
