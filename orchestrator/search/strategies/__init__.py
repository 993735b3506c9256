"""Search strategies: small classes behind one interface, chosen by `search.strategy`.

A strategy proposes the next batch of archs and opens their trials in the
study. Everything it knows comes from the database (the evaluations so far),
and its randomness from a generator seeded by the study seed and the number of
evaluations done, so a resumed search proposes what an uninterrupted one would.

- `random`: the baseline, uniform over depth (`random_search.py`).
- `nsga2`, `tpe`: Optuna's samplers drive the same evaluations (`optuna_samplers.py`).
- `evolutionary`: predictor-guided, as LINAS does (`evolutionary.py`).

A new strategy is a module here with a class behind `base.Strategy`, named in
`make_strategy` and in `config.STRATEGIES`.
"""

from orchestrator.search.strategies.base import SearchContext, Strategy, ask_fixed
from orchestrator.search.strategies.evolutionary import EvolutionaryStrategy
from orchestrator.search.strategies.optuna_samplers import OptunaStrategy
from orchestrator.search.strategies.random_search import RandomStrategy

__all__ = ["SearchContext", "Strategy", "ask_fixed", "make_strategy", "EvolutionaryStrategy", "OptunaStrategy",
           "RandomStrategy"]


def make_strategy(name: str) -> Strategy:
    if name == "random":
        return RandomStrategy()
    if name in ("nsga2", "tpe"):
        return OptunaStrategy(name)
    if name == "evolutionary":
        return EvolutionaryStrategy()
    raise ValueError(f"unknown strategy {name!r}")
