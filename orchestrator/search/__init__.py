"""The search: the driver loop behind `search` and `resume` (`driver`), the strategies that propose
archs (`strategies/`), the study's objectives and constraints, and Pareto fronts."""
