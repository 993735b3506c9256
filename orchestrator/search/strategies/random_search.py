"""The baseline: archs drawn uniformly over depth, none evaluated or proposed before."""

from __future__ import annotations

import numpy as np

from orchestrator.search.strategies.base import SearchContext, ask_fixed
from search_space import Arch


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
