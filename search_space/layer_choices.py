"""One layer slot's choices: heads, MLP width (as ratios of the layer's width or absolute sizes),
token mixers, bit widths, and where the space gives them, its layer genes' (`search_space.layer_genes`):
its own hidden size, the factors a stage boundary before it may merge its tokens by."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from search_space.layer_genes import LAYER_GENES, arch_values
from search_space.registry import has_heads


@dataclass(frozen=True)
class LayerChoices:
    num_heads: tuple[int, ...]
    mixer: tuple[str, ...]  # token mixers (`supernet.mixers`)
    bits: tuple[int, ...]
    mlp_dim: tuple[int, ...] | None = None
    mlp_ratio: tuple[float, ...] | None = None
    # the layer genes' choices; None where the layer has none (it runs at the arch's embed_dim; no boundary)
    width: tuple[int, ...] | None = None
    reduce: tuple[int, ...] | None = None

    @property
    def mlp_key(self) -> str:
        return "mlp_ratio" if self.mlp_ratio is not None else "mlp_dim"

    @property
    def mlp_options(self) -> tuple:
        return self.mlp_ratio if self.mlp_ratio is not None else self.mlp_dim

    def mlp_hidden(self, option_index: int, embed_dim: int) -> int:
        if self.mlp_ratio is not None:
            return max(1, int(round(self.mlp_ratio[option_index] * embed_dim)))
        return self.mlp_dim[option_index]

    @functools.lru_cache(maxsize=256)  # noqa: B019 - choices are few, immutable and live as long as their space
    def mlp_dims(self, embed_dim: int) -> tuple[int, ...]:
        """Distinct hidden sizes this layer may take at `embed_dim`, ascending (cached: a search
        validates and encodes tens of thousands of candidates)."""
        return tuple(sorted({self.mlp_hidden(i, embed_dim) for i in range(len(self.mlp_options))}))

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - as mlp_dims
    def mlp_index(self, mlp_dim: int, embed_dim: int) -> int:
        for i in range(len(self.mlp_options)):
            if self.mlp_hidden(i, embed_dim) == mlp_dim:
                return i
        raise KeyError(mlp_dim)

    def widths(self, embed_dim: int) -> tuple[int, ...]:
        """The hidden sizes this layer may run at in an arch of `embed_dim`."""
        return (embed_dim,) if self.width is None else self.width

    def gene_values(self, key: str) -> tuple[int | None, ...]:
        """The values an arch may write for layer gene `key`: its choices, or None alone without them."""
        return arch_values(getattr(self, key))

    def heads_of(self, mixer: str, num_heads: int) -> int:
        """`num_heads` as an arch writes it: a layer whose mixer has no heads (`fourier`, `none`) writes the
        smallest choice, so that one network has one arch (and one key)."""
        return num_heads if has_heads(mixer) else min(self.num_heads)

    def mixer_options(self) -> list[tuple[int, str]]:
        """The distinct (heads, mixer) pairs of this layer."""
        return [(self.heads_of(a, h), a) for a in self.mixer
                for h in (self.num_heads if has_heads(a) else self.num_heads[:1])]

    def options(self, embed_dim: int) -> int:
        per_width = len(self.mixer_options()) * len(self.bits) * math.prod(
            len(self.gene_values(gene.key)) for gene in LAYER_GENES if gene.independent)
        return sum(per_width * len(self.mlp_dims(w)) for w in self.widths(embed_dim))

    def to_dict(self) -> dict[str, Any]:
        data = {"num_heads": list(self.num_heads), self.mlp_key: list(self.mlp_options),
                "mixer": list(self.mixer), "bits": list(self.bits)}
        # a gene only where given: a space without it keeps its hash
        data.update({g.key: list(getattr(self, g.key)) for g in LAYER_GENES if getattr(self, g.key) is not None})
        return data
