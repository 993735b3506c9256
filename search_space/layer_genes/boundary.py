"""A stage boundary before a layer (ViT-ResNAS): its input tokens are merged in groups of the gene's
factor, `reduce` (`supernet.token_reduction`), so that it and the layers after it cost a fraction of
the first ones. A factor of 1 is no boundary; layer 0 reads the stem's tokens and has none."""

from __future__ import annotations

import math
from typing import Any

from search_space.choice_lists import int_choices
from search_space.errors import SpaceError
from search_space.layer_genes.base import FeatureSpace, GeneArch, LayerGene

MAX_FACTOR = 1 << 16  # tokens merged into one: beyond any sequence a model reads


class Boundary(LayerGene):
    key = "reduce"
    first_layer = "layer 0 reads the stem's tokens; a stage boundary (reduce) goes before a later layer"
    one_layer = "a space of one layer has no layer after the first to put a stage boundary before"
    absent = "this layer of the space starts no stage"

    def read(self, values: Any, where: str, max_width: int) -> tuple[int, ...]:
        factors = int_choices(values, where)
        for factor in factors:
            if factor > MAX_FACTOR:
                raise SpaceError(f"{where}: a factor of {factor} merges more tokens than any sequence holds "
                                 f"(at most {MAX_FACTOR:,})")
        return factors

    def beyond_depth(self, where: str, index: int, max_depth: int) -> str | None:
        return (f"{where}: a stage boundary before layer {index} is beyond the depth (the deepest arch has "
                f"{max_depth} layers, indices 0 to {max_depth - 1})")

    def extreme(self, values: tuple[int, ...], largest: bool) -> int:
        return min(values) if largest else max(values)  # the largest arch merges the fewest tokens

    def feature_names(self, space: FeatureSpace, index: int) -> list[str]:
        # and in a space with stages, the share of the input's tokens each layer sees (1 / the product of the
        # factors so far: a sequence's share; a patch grid's is its square), which its cost falls with
        return super().feature_names(space, index) + [f"layer{index}.tokens"]

    def features(self, space: FeatureSpace, arch: GeneArch, index: int) -> list[float]:
        share = 1.0 / math.prod(factor_of(arch, i) for i in range(index + 1))
        return super().features(space, arch, index) + [share]


def factor_of(arch: GeneArch, index: int) -> int:
    """The factor layer `index`'s input tokens are merged by (1: no boundary before it)."""
    return arch.layers[index].reduce or 1


def has_boundaries(arch: GeneArch) -> bool:
    return any(factor_of(arch, i) > 1 for i in range(arch.depth))


BOUNDARY = Boundary()
