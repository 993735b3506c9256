"""Fixed-length numeric features of an architecture, for predictors.

One block per layer slot (never averaged over layers); inactive slots are all
zeros, including their `active` flag. Sizes are divided by the space's maximum
so features lie in [0, 1]. In a space with stages each layer also carries the
share of the input's tokens it sees (1 / the product of the factors before it,
a sequence's share; a patch grid's is its square), since a layer's cost falls with them.
"""

from __future__ import annotations

import numpy as np

from search_space.arch import Arch
from search_space.space import SearchSpace


def feature_names(space: SearchSpace) -> list[str]:
    names = ["embed_dim", "depth"]
    for i, choices in enumerate(space.layers):
        names += [f"layer{i}.active", f"layer{i}.num_heads", f"layer{i}.mlp_dim"]
        names += [f"layer{i}.width"] if choices.width is not None else []
        names += [f"layer{i}.reduce"] if choices.reduce is not None else []
        names += [f"layer{i}.tokens"] if space.has_reductions else []
        names += [f"layer{i}.mixer={a}" for a in choices.mixer]
        names += [f"layer{i}.bits={b}" for b in choices.bits]
    return names


def encode(space: SearchSpace, arch: Arch) -> np.ndarray:
    space.validate(arch)
    features = [arch.embed_dim / space.max_embed_dim, arch.depth / space.max_depth]
    merged = 1  # tokens merged into one so far
    for i, choices in enumerate(space.layers):
        block_size = (3 + (choices.width is not None) + (choices.reduce is not None) + space.has_reductions
                      + len(choices.mixer) + len(choices.bits))
        if i >= arch.depth:
            features += [0.0] * block_size
            continue
        layer = arch.layers[i]
        merged *= arch.reduction_of(i)
        features += [1.0, layer.num_heads / space.max_heads(i), layer.mlp_dim / space.max_mlp_dim(i)]
        features += [layer.width / space.max_embed_dim] if choices.width is not None else []
        features += [layer.reduce / max(choices.reduce)] if choices.reduce is not None else []
        features += [1.0 / merged] if space.has_reductions else []
        features += [float(layer.mixer == a) for a in choices.mixer]
        features += [float(layer.bits == b) for b in choices.bits]
    return np.asarray(features, dtype=np.float64)


def encode_many(space: SearchSpace, archs: list[Arch]) -> np.ndarray:
    if not archs:
        return np.zeros((0, len(feature_names(space))))
    return np.stack([encode(space, arch) for arch in archs])
