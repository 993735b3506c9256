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

A decoder LM's latency is one generated token at the target's context: its costs are one token's, and
beside them the bytes of the KV cache that token reads (`kv_bytes`: the cache grows with the context, and
at batch 1 reading it is most of attention's cost) and the bytes of the whole cache (`kv_cache_bytes`: the
artifact writes its present cache whole each step, a `sliding` layer's too).
"""

from __future__ import annotations

import numpy as np

from predictors.cost import arch_costs, kv_cache_bytes, kv_read_bytes
from predictors.target import HardwareTarget, decode_context
from search_space import Arch, SearchSpace
from supernet.quant import FULL_PRECISION
from supernet.task_spec import TaskSpec
from supernet.token_reduction import boundary_operations


def latency_feature_names(space: SearchSpace, decoder: bool = False) -> list[str]:
    bits = sorted({min(b, FULL_PRECISION) for b in space.bit_widths}, reverse=True)
    names = [f"linear@{b}" for b in bits] + [f"calls:linear@{b}" for b in bits]
    names += [f"mixing:{a}" for a in space.mixers] + [f"calls:mixing:{a}" for a in space.mixers]
    names += [name for op in boundary_operations(space) for name in (op, f"calls:{op}")]
    names += ["norm", "activation", "position", "depth", "embed_dim", "weight_bytes", "weight_bytes^2"]
    return names + ["kv_bytes", "kv_cache_bytes"] if decoder else names  # only a decoder's: an encoder's features
    # stay what they were


def latency_features(space: SearchSpace, task: TaskSpec, target: HardwareTarget, archs: list[Arch]) -> np.ndarray:
    names = latency_feature_names(space, task.style.causal)
    rows = []
    decoder = task.style.causal
    context = decode_context(target, task) if decoder else 0
    for arch in archs:
        costs = arch_costs(space, task, arch, target.batch_size, 1 if decoder else target.seq_len)
        values = {**costs.by_op, "depth": arch.depth, "embed_dim": arch.embed_dim,
                  "weight_bytes": costs.weight_bytes, "weight_bytes^2": float(costs.weight_bytes) ** 2,
                  "kv_bytes": kv_read_bytes(space, task, arch, target.batch_size, context),
                  "kv_cache_bytes": kv_cache_bytes(space, task, arch, target.batch_size, context)}
        rows.append([float(values.get(name, 0.0)) for name in names])
    return np.asarray(rows, dtype=np.float64).reshape(len(archs), len(names))
