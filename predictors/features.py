"""Latency features: the analytic costs of an arch, per operation and bit width.

Latency is close to a sum over operations of (calls x per-call overhead +
MACs x per-MAC cost), with different constants for fp32 and int8 kernels and
for each token mixer. So the features are, per operation and bit width,
the MACs and the number of calls, from the analytic cost model. Beside them, the
bytes of the artifact's weights and their square: a call at a small batch streams
its weights, and once they outgrow the caches each byte costs more (on MiniLM's
space at batch 1, a linear fit's residuals rose with the model's bytes; with the
square its cross-validated error fell from 3.1-5.3% to 1.1-2.3%, and digits'
stayed at 1.3% and 0.3-0.4%: `bench/latency/latency_protocol.py`).
"""

from __future__ import annotations

import numpy as np

from predictors.cost import arch_costs
from predictors.target import HardwareTarget
from search_space import Arch, SearchSpace
from supernet.quant import FULL_PRECISION
from supernet.task_spec import TaskSpec
from supernet.token_reduction import boundary_operations


def latency_feature_names(space: SearchSpace) -> list[str]:
    bits = sorted({min(b, FULL_PRECISION) for b in space.bit_widths}, reverse=True)
    names = [f"linear@{b}" for b in bits] + [f"calls:linear@{b}" for b in bits]
    names += [f"mixing:{a}" for a in space.mixers] + [f"calls:mixing:{a}" for a in space.mixers]
    names += [name for op in boundary_operations(space) for name in (op, f"calls:{op}")]
    return names + ["norm", "activation", "position", "depth", "embed_dim", "weight_bytes", "weight_bytes^2"]


def latency_features(space: SearchSpace, task: TaskSpec, target: HardwareTarget, archs: list[Arch]) -> np.ndarray:
    names = latency_feature_names(space)
    rows = []
    for arch in archs:
        costs = arch_costs(space, task, arch, target.batch_size, target.seq_len)
        values = {**costs.by_op, "depth": arch.depth, "embed_dim": arch.embed_dim,
                  "weight_bytes": costs.weight_bytes, "weight_bytes^2": float(costs.weight_bytes) ** 2}
        rows.append([float(values.get(name, 0.0)) for name in names])
    return np.asarray(rows, dtype=np.float64).reshape(len(archs), len(names))
