"""`LayerGene`: a choice a space may give some layers and not others (a layer's own width, a stage
boundary before it), defined once: its key, the checks of its declared values, what an arch writes for
it, its extremes and its features for the predictors.

The space, its reading, its genome, its encoding, its sampling and the Optuna map loop over
`search_space.layer_genes.LAYER_GENES` and hold no branch of their own on a gene; a layer without
choices for a gene writes None for it, so that a space without the gene keeps its hash, its archs'
keys and its random stream.
"""

from __future__ import annotations

from typing import Any, Protocol


class GeneArch(Protocol):
    """What a gene reads of an arch (`search_space.arch.Arch`, which reads the genes' keys)."""

    layers: tuple
    depth: int


class FeatureSpace(Protocol):
    """What a gene's features read of a space."""

    max_embed_dim: int
    layers: tuple


class LayerGene:
    key: str  # in the space's layer choices, in an arch's layers, in features and Optuna parameters
    # why layer 0 cannot take it (the stem feeds layer 0), and why a space of one layer cannot
    first_layer: str
    one_layer: str
    absent: str  # what an arch's value is refused with where its layer has no choices for the gene
    # drawn and counted alone (True), or with the MLP width it decides (False: `LayerChoices.widths`)
    independent: bool = True
    # whether archs that differ in it can share one padded multi-arch pass (`supernet.training.multi_arch`)
    padded: bool = False

    def read(self, values: Any, where: str, max_width: int) -> tuple[int, ...]:
        """The declared values, checked; a problem is a `SpaceError` naming `where`."""
        raise NotImplementedError

    def beyond_depth(self, where: str, index: int, max_depth: int) -> str | None:
        """A message of its own for an override naming a layer past the deepest, or None."""
        return None

    def extreme(self, values: tuple[int, ...], largest: bool) -> int:
        """The value of the space's largest (or smallest) arch."""
        return max(values) if largest else min(values)

    def feature_names(self, space: FeatureSpace, index: int) -> list[str]:
        """Layer `index`'s features, in a space where some layer has choices for the gene."""
        return [f"layer{index}.{self.key}"] if getattr(space.layers[index], self.key) is not None else []

    def features(self, space: FeatureSpace, arch: GeneArch, index: int) -> list[float]:
        values = getattr(space.layers[index], self.key)
        return [] if values is None else [getattr(arch.layers[index], self.key) / self.scale(space, values)]

    def scale(self, space: FeatureSpace, values: tuple[int, ...]) -> float:
        """What a feature's value is divided by, so that it lies in [0, 1]."""
        return max(values)


def arch_values(values: tuple[int, ...] | None) -> tuple[int | None, ...]:
    """The values an arch may write for a gene its layer has `values` of: None alone without them."""
    return (None,) if values is None else values
