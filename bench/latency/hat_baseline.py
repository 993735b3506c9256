"""HAT's predictors, the baselines elastiq's are compared with: its layer-averaged encoding (global choices and
per-layer choices averaged over layers) and its MLP regressor."""

from __future__ import annotations

import numpy as np
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from search_space import SearchSpace


def layer_averaged(space: SearchSpace, archs) -> np.ndarray:
    """HAT's encoding: global choices plus per-layer choices averaged over layers."""
    rows = []
    for arch in archs:
        n = arch.depth
        rows.append([arch.embed_dim, n, sum(x.num_heads for x in arch.layers) / n,
                     sum(x.mlp_dim for x in arch.layers) / n]
                    + [sum(x.mixer == a for x in arch.layers) / n for a in space.mixers]
                    + [sum(x.bits == b for x in arch.layers) / n for b in space.bit_widths])
    return np.asarray(rows, dtype=float)


def hat_mlp(seed: int):
    return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(400, 400, 400), max_iter=3000,
                                                        random_state=seed))
