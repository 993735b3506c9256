"""One layer slot's choices: heads, MLP width (as ratios of the embedding or absolute sizes),
attention types and bit widths."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerChoices:
    num_heads: tuple[int, ...]
    attention: tuple[str, ...]
    bits: tuple[int, ...]
    mlp_dim: tuple[int, ...] | None = None
    mlp_ratio: tuple[float, ...] | None = None

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

    def options(self, embed_dim: int) -> int:
        return len(self.num_heads) * len(self.mlp_dims(embed_dim)) * len(self.attention) * len(self.bits)

    def to_dict(self) -> dict[str, Any]:
        return {"num_heads": list(self.num_heads), self.mlp_key: list(self.mlp_options),
                "attention": list(self.attention), "bits": list(self.bits)}
