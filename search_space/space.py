"""`SearchSpace`: the set of architectures, declared in YAML or a dict.

    name: digits
    head_dim: 16            # fixed per-head width; a layer's attention width is heads * head_dim
    local_window: 4         # tokens each side seen by `local` attention
    depth_heads: false      # true: a head (pooler, classifier) for each depth, not one for all
    quantize_embeddings: true  # token/position tables stored int8 (default: on when a layer may be quantized)
    quant_block_size: 32    # 4- and 2-bit layers: one weight scale per this many inputs (a power of two >= 16)
    embed_dim: [64, 96, 128]
    depth: [1, 2, 3, 4]
    layer:                  # choices of every layer ...
      num_heads: [2, 4]
      mlp_ratio: [1, 2, 4]  # hidden = round(ratio * embed_dim); or mlp_dim: [absolute sizes]
      mixer: [softmax, linear, local]   # also fourier (FNet), conv3, conv5, ... (depthwise, odd kernel), none
                                        # (no token mixing: the MLP alone); `attention`, its former name, still reads
      bits: [32, 8]
    per_layer:              # ... unless overridden by layer index (heterogeneous spaces)
      - layers: [0, 1]
        num_heads: [4]
      - layers: [2, 3]
        width: [64, 128]    # a hidden size of their own (FlexiBERT); layer 0 runs at embed_dim
      - layers: [2]
        reduce: [1, 2]      # a stage boundary the search may put before layer 2 (ViT-ResNAS): tokens merged
                            # 2 by 2 (a sequence) or 2x2 (a patch grid); 1: no boundary

Internally an architecture is also a *genome*: one choice index per decision
(embed dim, depth, then four per layer slot up to the maximum depth, and one
more per layer gene that some layer of the space has choices for). Genes of
inactive slots are kept so that mutation and crossover can bring them back.

The layer genes (`search_space.layer_genes`, one module each) are choices a
space gives some layers and not others; given to every layer, they apply from
layer 1 on, since the stem feeds layer 0:
- `width`: the layer runs at its own hidden size; where consecutive layers'
  widths differ, a projection joins them; the head reads the last layer's width.
- `reduce`: a stage boundary before the layer: its input tokens are merged in
  groups of the factor (`supernet.token_reduction`), so that it and the layers
  after it cost a fraction of the first ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_space import sampling
from search_space.arch import Arch, LayerArch, former_names
from search_space.errors import SpaceError
from search_space.layer_choices import LayerChoices
from search_space.layer_genes import LAYER_GENES, WIDTH, LayerGene
from search_space.registry import DEFAULT_QUANT_BLOCK_SIZE
from search_space.space_reading import space_fields
from search_space.yaml_input import read_yaml

GENES_PER_LAYER = 4  # num_heads, mlp, mixer, bits; then each layer gene some layer of the space has


@dataclass(frozen=True)
class SearchSpace:
    name: str
    head_dim: int
    local_window: int
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    layers: tuple[LayerChoices, ...]  # one per slot, len == max(depths)
    # a head per depth: a shallow subnet's last layer then feeds a head of its own, since one head
    # cannot read both the first layer's and the last one's outputs of a pretrained model
    depth_heads: bool = False
    # the token, position and token-type tables stored int8 (each row on its own scale)
    quantize_embeddings: bool = False
    quant_block_size: int = DEFAULT_QUANT_BLOCK_SIZE  # inputs per weight scale of 4- and 2-bit layers

    # ---- construction -------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        data = read_yaml(path, SpaceError)
        try:
            return cls.from_dict(data)
        except SpaceError as exc:
            raise SpaceError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        return cls(**space_fields(data))

    def to_dict(self) -> dict[str, Any]:
        """Canonical form: every layer spelled out (overrides already applied)."""
        data = {"name": self.name, "head_dim": self.head_dim, "local_window": self.local_window,
                "embed_dim": list(self.embed_dims), "depth": list(self.depths),
                "layers": [layer.to_dict() for layer in self.layers]}
        if self.depth_heads:  # only then: the hash of a space without them stays what it was
            data["depth_heads"] = True
        if self.quantize_embeddings or self.bit_widths != (32,):  # likewise; written where it is not the default
            data["quantize_embeddings"] = self.quantize_embeddings
        if any(b < 8 for b in self.bit_widths):  # the block size matters only then
            data["quant_block_size"] = self.quant_block_size
        return data

    @property
    def table_bits(self) -> int:
        """The bits the embedding tables are read at: 8 where the space quantizes them, else 32."""
        return 8 if self.quantize_embeddings else 32

    @property
    def hash(self) -> str:
        """Identity of the space's content (the name excluded): checkpoints carry it."""
        canonical = self.to_dict()
        canonical.pop("name")
        # under the names its fields had before a rename: a checkpoint keeps matching its space
        canonical["layers"] = [former_names(layer) for layer in canonical["layers"]]
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    # ---- sizes -------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return len(self.layers)

    @property
    def max_embed_dim(self) -> int:
        return max(self.embed_dims)

    def max_heads(self, layer: int) -> int:
        return max(self.layers[layer].num_heads)

    def max_mlp_dim(self, layer: int) -> int:
        choices = self.layers[layer]
        return max(max(choices.mlp_dims(w)) for e in self.embed_dims for w in choices.widths(e))

    def has_gene(self, key: str) -> bool:
        """Whether some layer has choices for layer gene `key` (`search_space.layer_genes`)."""
        return any(getattr(layer, key) is not None for layer in self.layers)

    @functools.cached_property  # frozen: its layers never change
    def genes(self) -> tuple[LayerGene, ...]:
        """The layer genes some layer has choices for, in genome order."""
        return tuple(gene for gene in LAYER_GENES if self.has_gene(gene.key))

    @property
    def has_layer_widths(self) -> bool:
        """Whether some layer has a hidden size of its own (then projections may join layers)."""
        return self.has_gene(WIDTH.key)

    @property
    def padded_multi_arch(self) -> bool:
        """Whether its archs can share one padded multi-arch pass (`supernet.training.multi_arch`)."""
        return all(gene.padded for gene in self.genes)

    @property
    def genes_per_layer(self) -> int:
        return GENES_PER_LAYER + len(self.genes)

    @property
    def mixers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for layer in self.layers:
            seen.update(dict.fromkeys(layer.mixer))
        return tuple(seen)

    @property
    def bit_widths(self) -> tuple[int, ...]:
        return tuple(sorted({b for layer in self.layers for b in layer.bits}, reverse=True))

    def cardinality(self) -> int:
        """Exact number of distinct architectures (a Python int, no overflow)."""
        total, depths = 0, set(self.depths)
        for embed_dim in self.embed_dims:
            prefix = 1  # archs of the first `depth` layers, built up layer by layer
            for depth in range(1, self.max_depth + 1):
                prefix *= self.layers[depth - 1].options(embed_dim)
                if depth in depths:
                    total += prefix
        return total

    # ---- validation --------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Return `arch` if it belongs to the space; otherwise raise naming the field."""
        if arch.embed_dim not in self.embed_dims:
            raise SpaceError(f"arch.embed_dim: {arch.embed_dim} not in {list(self.embed_dims)}")
        if arch.depth not in self.depths:
            raise SpaceError(f"arch depth {arch.depth} (number of layers) not in {list(self.depths)}")
        for i, layer in enumerate(arch.layers):
            choices = self.layers[i]
            for gene in LAYER_GENES:
                value, values = getattr(layer, gene.key), getattr(choices, gene.key)
                if value not in choices.gene_values(gene.key):
                    raise SpaceError(f"arch.layers[{i}].{gene.key}: {value!r}" + (
                        f", but {gene.absent}" if values is None else f" not in {list(values)}"))
            if layer.num_heads != choices.heads_of(layer.mixer, layer.num_heads):
                raise SpaceError(f"arch.layers[{i}].num_heads: {layer.num_heads}, but a {layer.mixer} layer has no "
                                 f"heads; "
                                 f"it is written with the smallest choice, {min(choices.num_heads)}")
            allowed = {"num_heads": choices.num_heads, "mlp_dim": choices.mlp_dims(arch.width_of(i)),
                       "mixer": choices.mixer, "bits": choices.bits}
            for field, values in allowed.items():
                value = getattr(layer, field)
                if value not in values:
                    raise SpaceError(f"arch.layers[{i}].{field}: {value!r} not in {list(values)}")
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except SpaceError:
            return False
        return True

    # ---- genome ------------------------------------------------------
    def gene_sizes(self) -> np.ndarray:
        sizes = [len(self.embed_dims), len(self.depths)]
        for layer in self.layers:
            sizes += [len(layer.num_heads), len(layer.mlp_options), len(layer.mixer), len(layer.bits)]
            sizes += [len(layer.gene_values(gene.key)) for gene in self.genes]
        return np.asarray(sizes, dtype=np.int64)

    def decode(self, genes: Sequence[int]) -> Arch:
        genes = [int(g) for g in genes]
        embed_dim = self.embed_dims[genes[0]]
        depth = self.depths[genes[1]]
        per = self.genes_per_layer
        layers = []
        for i in range(depth):
            choices = self.layers[i]
            h, m, a, b, *rest = genes[2 + per * i: 2 + per * (i + 1)]
            values = {gene.key: choices.gene_values(gene.key)[g] for gene, g in zip(self.genes, rest, strict=True)}
            mixer = choices.mixer[a]
            layers.append(LayerArch(num_heads=choices.heads_of(mixer, choices.num_heads[h]),
                                    mlp_dim=choices.mlp_hidden(m, values.get(WIDTH.key) or embed_dim),
                                    mixer=mixer, bits=choices.bits[b], **values))
        return Arch(embed_dim=embed_dim, layers=tuple(layers))

    def genome(self, arch: Arch, rng: np.random.Generator | None = None) -> np.ndarray:
        """Genes of `arch`; inactive slots are drawn from `rng` (or set to 0 without one)."""
        self.validate(arch)
        sizes = self.gene_sizes()
        genes = rng.integers(0, sizes) if rng is not None else np.zeros_like(sizes)
        genes[0] = self.embed_dims.index(arch.embed_dim)
        genes[1] = self.depths.index(arch.depth)
        per = self.genes_per_layer
        for i, layer in enumerate(arch.layers):
            choices = self.layers[i]
            genes[2 + per * i: 2 + per * i + GENES_PER_LAYER] = [
                choices.num_heads.index(layer.num_heads), choices.mlp_index(layer.mlp_dim, arch.width_of(i)),
                choices.mixer.index(layer.mixer), choices.bits.index(layer.bits)]
            for k, gene in enumerate(self.genes):
                genes[2 + per * i + GENES_PER_LAYER + k] = choices.gene_values(gene.key).index(getattr(layer, gene.key))
        return genes

    # ---- sampling and variation (see search_space.sampling) -----------
    def sample(self, rng: np.random.Generator, mode: str = "depth_uniform") -> Arch:
        return sampling.sample(self, rng, mode)

    def smallest(self) -> Arch:
        return sampling.smallest(self)

    def largest(self) -> Arch:
        return sampling.largest(self)

    def mutate(self, arch: Arch, prob: float, rng: np.random.Generator) -> Arch:
        return sampling.mutate(self, arch, prob, rng)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        return sampling.crossover(self, a, b, rng)

    def summary(self) -> str:
        lines = [f"space {self.name!r} (hash {self.hash[:12]})",
                 f"  embed_dim {list(self.embed_dims)}, depth {list(self.depths)}, head_dim {self.head_dim}, "
                 f"local_window {self.local_window}" + (", a head per depth" if self.depth_heads else "")
                 + (", int8 embeddings" if self.quantize_embeddings else "")
                 + (f", {self.quant_block_size}-input weight blocks below 8 bits"
                    if any(b < 8 for b in self.bit_widths) else "")]
        groups: list[tuple[list[int], LayerChoices]] = []
        for i, layer in enumerate(self.layers):
            if groups and groups[-1][1] == layer:
                groups[-1][0].append(i)
            else:
                groups.append(([i], layer))
        for indices, layer in groups:
            span = f"{indices[0]}" if len(indices) == 1 else f"{indices[0]}-{indices[-1]}"
            lines.append(f"  layers {span}: heads {list(layer.num_heads)}, {layer.mlp_key} {list(layer.mlp_options)}, "
                         f"mixer {list(layer.mixer)}, bits {list(layer.bits)}"
                         + "".join(f", {g.key} {list(getattr(layer, g.key))}" for g in LAYER_GENES
                                   if getattr(layer, g.key) is not None))
        lines.append(f"  cardinality {self.cardinality():,}")
        return "\n".join(lines)
