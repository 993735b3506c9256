"""Random architectures and their variation, always from an explicit generator.

These work on any space that maps genes to archs (`GeneSpace`: `search_space.space.SearchSpace`
is one), so that the space calls them and they never import it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from search_space.arch import Arch, LayerArch
from search_space.errors import SpaceError
from search_space.layer_choices import LayerChoices
from search_space.layer_genes import LAYER_GENES, WIDTH
from search_space.registry import has_heads

SAMPLE_MODES = ("depth_uniform", "arch_uniform")


class GeneSpace(Protocol):
    """What sampling needs of a space: its choices, and the map between genes and archs."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    layers: tuple[LayerChoices, ...]

    def gene_sizes(self) -> np.ndarray: ...

    def decode(self, genes: Sequence[int]) -> Arch: ...

    def genome(self, arch: Arch, rng: np.random.Generator | None = None) -> np.ndarray: ...


def sample(space: GeneSpace, rng: np.random.Generator, mode: str = "depth_uniform") -> Arch:
    """A random architecture.

    `depth_uniform` draws every decision uniformly, so each depth is equally
    likely and small models are as common as large ones. `arch_uniform` draws
    uniformly over the whole set of architectures, where deep ones dominate.
    """
    if mode == "depth_uniform":
        return space.decode(rng.integers(0, space.gene_sizes()))
    if mode == "arch_uniform":
        cells = [(e, d) for e in space.embed_dims for d in space.depths]
        counts = np.array([math.prod(space.layers[i].options(e) for i in range(d)) for e, d in cells], dtype=float)
        embed_dim, depth = cells[rng.choice(len(cells), p=counts / counts.sum())]
        layers = []
        for i in range(depth):
            choices = space.layers[i]
            widths = choices.widths(embed_dim)
            width = widths[0]
            if len(widths) > 1:  # each width weighted by the archs it opens; one width draws nothing
                counts = np.array([len(choices.mlp_dims(w)) for w in widths], dtype=float)
                width = widths[rng.choice(len(widths), p=counts / counts.sum())]
            dims = choices.mlp_dims(width)  # distinct sizes: ratios that round alike count once
            if not all(map(has_heads, choices.mixer)):  # heads do not multiply a headless mixer: draw the pairs
                pairs = choices.mixer_options()
                num_heads, mixer = pairs[rng.integers(len(pairs))]
                mlp_dim = dims[rng.integers(len(dims))]
            else:
                num_heads = choices.num_heads[rng.integers(len(choices.num_heads))]
                mlp_dim = dims[rng.integers(len(dims))]
                mixer = choices.mixer[rng.integers(len(choices.mixer))]
            bits = choices.bits[rng.integers(len(choices.bits))]
            genes = {WIDTH.key: None if choices.width is None else width, **draw_genes(choices, rng)}
            layers.append(LayerArch(num_heads=num_heads, mlp_dim=mlp_dim, mixer=mixer, bits=bits, **genes))
        return Arch(embed_dim=embed_dim, layers=tuple(layers))
    raise SpaceError(f"sample mode {mode!r} unknown; choose one of {list(SAMPLE_MODES)}")


def draw_genes(choices: LayerChoices, rng: np.random.Generator) -> dict[str, int | None]:
    """A value of each independent layer gene the layer has choices for, uniformly; a gene without choices
    draws nothing, so that a space without it keeps its random stream."""
    drawn = {}
    for gene in LAYER_GENES:
        values = getattr(choices, gene.key)
        if gene.independent:
            drawn[gene.key] = None if values is None else values[rng.integers(len(values))]
    return drawn


def largest(space: GeneSpace) -> Arch:
    """Widest, deepest, full precision, the fewest tokens merged; each layer's first declared mixer."""
    embed_dim = max(space.embed_dims)
    return _extreme(space, embed_dim, max(space.depths), max)


def smallest(space: GeneSpace) -> Arch:
    """Narrowest, shallowest, the most tokens merged; precision and mixer as in `largest`, so the
    sandwich rule spans size while quantization is randomized separately."""
    embed_dim = min(space.embed_dims)
    return _extreme(space, embed_dim, min(space.depths), min)


def _extreme(space: GeneSpace, embed_dim: int, depth: int, pick) -> Arch:
    layers = tuple(
        LayerArch(num_heads=c.heads_of(c.mixer[0], pick(c.num_heads)),
                  mlp_dim=pick(c.mlp_dims(pick(c.widths(embed_dim)))), mixer=c.mixer[0], bits=max(c.bits),
                  **{g.key: None if getattr(c, g.key) is None else g.extreme(getattr(c, g.key), pick is max)
                     for g in LAYER_GENES})
        for c in space.layers[:depth])
    return Arch(embed_dim=embed_dim, layers=layers)


def mutate(space: GeneSpace, arch: Arch, prob: float, rng: np.random.Generator) -> Arch:
    """Each decision (including those of inactive layers) changes to another
    value with probability `prob`."""
    if not 0.0 <= prob <= 1.0:
        raise SpaceError(f"mutation probability {prob} is not in [0, 1]")
    genes = space.genome(arch, rng)
    sizes = space.gene_sizes()
    for i, size in enumerate(sizes):
        if size > 1 and rng.random() < prob:
            # shift by 1..size-1 so the new value always differs
            genes[i] = (genes[i] + rng.integers(1, size)) % size
    return space.decode(genes)


def crossover(space: GeneSpace, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Uniform crossover: each decision from either parent with equal chance."""
    genes_a, genes_b = space.genome(a, rng), space.genome(b, rng)
    take_a = rng.random(len(genes_a)) < 0.5
    return space.decode(np.where(take_a, genes_a, genes_b))
