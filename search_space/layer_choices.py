"""One layer slot's choices: heads, MLP width (as ratios of the layer's width or absolute sizes),
token mixers, bit widths, and where the space gives them, its own hidden size and the
factors its input tokens may be reduced by (a stage boundary before it)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from search_space.registry import has_heads


@dataclass(frozen=True)
class LayerChoices:
    num_heads: tuple[int, ...]
    mixer: tuple[str, ...]  # token mixers (`supernet.mixers`)
    bits: tuple[int, ...]
    mlp_dim: tuple[int, ...] | None = None
    mlp_ratio: tuple[float, ...] | None = None
    width: tuple[int, ...] | None = None  # the layer's own hidden sizes; None: it runs at the arch's embed_dim
    reduce: tuple[int, ...] | None = None  # token reduction factors before the layer (1: none); None: no boundary

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

    def reductions(self) -> tuple[int | None, ...]:
        """The values an arch may write for this layer's reduction: its factors, or None without them."""
        return (None,) if self.reduce is None else self.reduce

    def heads_of(self, mixer: str, num_heads: int) -> int:
        """`num_heads` as an arch writes it: a layer whose mixer has no heads (`fourier`, `none`) writes the
        smallest choice, so that one network has one arch (and one key)."""
        return num_heads if has_heads(mixer) else min(self.num_heads)

    def mixer_options(self) -> list[tuple[int, str]]:
        """The distinct (heads, mixer) pairs of this layer."""
        return [(self.heads_of(a, h), a) for a in self.mixer
                for h in (self.num_heads if has_heads(a) else self.num_heads[:1])]

    def options(self, embed_dim: int) -> int:
        per_width = len(self.mixer_options()) * len(self.bits) * len(self.reductions())
        return sum(per_width * len(self.mlp_dims(w)) for w in self.widths(embed_dim))

    def to_dict(self) -> dict[str, Any]:
        data = {"num_heads": list(self.num_heads), self.mlp_key: list(self.mlp_options),
                "mixer": list(self.mixer), "bits": list(self.bits)}
        if self.width is not None:  # only then: a space without layer widths keeps its hash
            data["width"] = list(self.width)
        if self.reduce is not None:  # likewise for a space without stages
            data["reduce"] = list(self.reduce)
        return data
