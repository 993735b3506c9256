"""A layer's own hidden size (FlexiBERT): where consecutive layers' widths differ, a projection joins
them (`supernet.model`); layer 0 runs at the arch's embed_dim, which the stem feeds it."""

from __future__ import annotations

from typing import Any

from search_space.choice_lists import int_choices
from search_space.errors import SpaceError
from search_space.layer_genes.base import FeatureSpace, LayerGene


class Width(LayerGene):
    key = "width"
    first_layer = "layer 0 runs at embed_dim (the stem feeds it); give its widths there"
    one_layer = "a space of one layer has no layer after the first to widen; its width is embed_dim"
    absent = "this layer of the space has no width of its own (it runs at embed_dim)"
    independent = False  # it decides the MLP widths a layer may take (`LayerChoices.widths`)

    def read(self, values: Any, where: str, max_width: int) -> tuple[int, ...]:
        widths = int_choices(values, where, positive=False)
        for w in widths:
            if not 1 <= w <= max_width:
                raise SpaceError(f"{where}: {w} is outside the embedding's range [1, {max_width}] (the "
                                 f"largest embed_dim, which the supernet's weights span)")
        return widths

    def scale(self, space: FeatureSpace, values: tuple[int, ...]) -> float:
        return space.max_embed_dim


WIDTH = Width()
