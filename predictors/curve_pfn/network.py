"""The PFN: a transformer over a curve's observed (progress, value) pairs that answers, for each queried
progress, a distribution of the value there.

As LC-PFN: an observed point's token is its progress's embedding plus its value's; a query's token is its
progress's embedding alone; every token attends to the observed tokens only (so queries never see each
other), and each query's output is the logits of a bar distribution: a density constant inside each of
`len(borders) - 1` buckets whose borders are quantiles of the prior's.

Unlike LC-PFN, the distribution is of the value's change since the last observed value, and a value's
embedding sees its difference from that last value, magnified: fine-tuning curves move by tenths of a
point, which buckets spread over all of [0, 1] and a value embedded on its [0, 1] scale cannot resolve. Both
are a change of variables given the observed curve, so the network learns the same posterior.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

_UNIFORM_STD = math.sqrt(1 / 12)  # inputs in [0, 1] are centred and scaled as a uniform variable's
DIFFERENCE_SCALE = 20.0  # a value's difference from the last observed one, in units of 5 points


@dataclass(frozen=True)
class PFNShape:
    width: int = 128
    layers: int = 4
    heads: int = 4
    buckets: int = 1000

    def __post_init__(self):
        if not all(isinstance(v, int) and v > 0 for v in (self.width, self.layers, self.heads, self.buckets)) \
                or self.width % self.heads or self.buckets < 2:
            raise ValueError(f"a PFN's width, layers, heads and buckets are positive integers, the width a multiple "
                             f"of the heads and at least 2 buckets: {self}")

    def to_dict(self) -> dict:
        return asdict(self)


class BarDistribution:
    """A piecewise-constant density on `borders` (increasing; values beyond them count as the end buckets)."""

    def __init__(self, borders: torch.Tensor):
        if borders.ndim != 1 or len(borders) < 3 or not bool(torch.all(borders[1:] > borders[:-1])):
            raise ValueError("a bar distribution needs at least 3 increasing borders")
        self.borders = borders.to(torch.float64)
        self.widths = self.borders[1:] - self.borders[:-1]

    def bucket_of(self, y: torch.Tensor) -> torch.Tensor:
        index = torch.searchsorted(self.borders.to(y.dtype), y.contiguous(), right=True) - 1
        return index.clamp(0, len(self.widths) - 1)

    def log_density(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y) under each row of `logits` (the loss is its negative)."""
        log_probs = F.log_softmax(logits.to(torch.float64), dim=-1)
        bucket = self.bucket_of(y)
        return log_probs.gather(-1, bucket.unsqueeze(-1)).squeeze(-1) - torch.log(self.widths[bucket])

    def quantile(self, logits: torch.Tensor, q: float) -> torch.Tensor:
        probs = F.softmax(logits.to(torch.float64), dim=-1)
        cdf = torch.cumsum(probs, dim=-1)
        bucket = torch.searchsorted(cdf, torch.full((*cdf.shape[:-1], 1), q, dtype=cdf.dtype)).clamp(
            max=len(self.widths) - 1).squeeze(-1)
        before = torch.where(bucket > 0, cdf.gather(-1, (bucket - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
        inside = (q - before) / probs.gather(-1, bucket.unsqueeze(-1)).squeeze(-1).clamp(min=1e-300)
        return self.borders[bucket] + inside.clamp(0, 1) * self.widths[bucket]

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        centres = (self.borders[1:] + self.borders[:-1]) / 2
        return F.softmax(logits.to(torch.float64), dim=-1) @ centres


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_attention = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, tokens: torch.Tensor, observed: int) -> torch.Tensor:
        batch, length, width = tokens.shape
        h = self.norm_attention(tokens)
        q = self.query(h).view(batch, length, self.heads, -1).transpose(1, 2)
        k, v = self.key_value(h[:, :observed]).view(batch, observed, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)
        tokens = tokens + self.out(attended)
        return tokens + self.mlp(self.norm_mlp(tokens))


class CurvePFN(nn.Module):
    def __init__(self, shape: PFNShape):
        super().__init__()
        self.shape = shape
        self.embed_progress = nn.Linear(1, shape.width)
        self.embed_value = nn.Linear(2, shape.width)  # the value, and its difference from the last one
        self.layers = nn.ModuleList(_Layer(shape.width, shape.heads) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, shape.buckets)

    def forward(self, progress: torch.Tensor, values: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Logits (batch, queries, buckets) of the change from the last observed value to the value at each of
        `queries` (batch, q), given the observed `progress` and `values` (batch, observed); progress in (0, 1]."""
        observed = progress.shape[1]
        positions = torch.cat([progress, queries], dim=1)
        tokens = self.embed_progress(((positions - 0.5) / _UNIFORM_STD).unsqueeze(-1))
        difference = (values - values[:, -1:]) * DIFFERENCE_SCALE
        value_tokens = self.embed_value(torch.stack([(values - 0.5) / _UNIFORM_STD, difference], dim=-1))
        tokens = torch.cat([tokens[:, :observed] + value_tokens, tokens[:, observed:]], dim=1)
        for layer in self.layers:
            tokens = layer(tokens, observed)
        return self.head(self.norm(tokens[:, observed:]))
