"""Fixed-length numeric features of an architecture, for predictors.

One block per layer slot (never averaged over layers); inactive slots are all
zeros, including their `active` flag. Sizes are divided by the space's maximum
so features lie in [0, 1]. Each layer gene (`search_space.layer_genes`) adds
its own features where the space has it.
"""

from __future__ import annotations

import numpy as np

from search_space.arch import Arch
from search_space.space import SearchSpace


def feature_names(space: SearchSpace) -> list[str]:
    names = ["embed_dim", "depth"]
    for i, choices in enumerate(space.layers):
        names += [f"layer{i}.active", f"layer{i}.num_heads", f"layer{i}.mlp_dim"]
        names += [name for gene in space.genes for name in gene.feature_names(space, i)]
        names += [f"layer{i}.mixer={a}" for a in choices.mixer]
        names += [f"layer{i}.bits={b}" for b in choices.bits]
    return names


def encode(space: SearchSpace, arch: Arch) -> np.ndarray:
    space.validate(arch)
    features = [arch.embed_dim / space.max_embed_dim, arch.depth / space.max_depth]
    for i, choices in enumerate(space.layers):
        if i >= arch.depth:
            gene_features = sum(len(gene.feature_names(space, i)) for gene in space.genes)
            features += [0.0] * (3 + gene_features + len(choices.mixer) + len(choices.bits))
            continue
        layer = arch.layers[i]
        features += [1.0, layer.num_heads / space.max_heads(i), layer.mlp_dim / space.max_mlp_dim(i)]
        features += [value for gene in space.genes for value in gene.features(space, arch, i)]
        features += [float(layer.mixer == a) for a in choices.mixer]
        features += [float(layer.bits == b) for b in choices.bits]
    return np.asarray(features, dtype=np.float64)


def encode_many(space: SearchSpace, archs: list[Arch]) -> np.ndarray:
    if not archs:
        return np.zeros((0, len(feature_names(space))))
    return np.stack([encode(space, arch) for arch in archs])
