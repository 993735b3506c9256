"""ViT-ResNAS's residual spatial reduction: a stage boundary, after which the layers see fewer tokens.

Before a layer whose arch reduces by `factor`, the tokens are merged in groups (`factor` consecutive
tokens of a sequence, or `factor` x `factor` patches of a patch grid), each group becoming one token:
the mean of its tokens (the residual path, without weights) plus a learned projection of its tokens side
by side after a LayerNorm (a strided convolution's worth). The projection starts at zero, so that a new
boundary begins as plain pooling: a pretrained model's later layers first see averages of what they saw.

A [CLS] token (the style's learned one, or the first token of a text model that pools it) stays apart,
never merged. A padded text's mask is pooled with its tokens: a group's mean is over its real tokens,
and a group of padding alone is padding. A sequence that the factor does not divide ends in a shorter
group; a patch grid must be divisible (a group across the image's edge would join unrelated patches).

Words: a *stage boundary* is where tokens are merged, before the layer whose `reduce` gene gives its
*factor*; a *group* is the tokens merged into one (`factor` of a sequence, `factor` x `factor` of a grid),
its *group size* their count. (`window` means local attention's reach, and only that.)

The same function serves the supernet (weights sliced from the largest, one set per factor) and the
extracted model (`Reduction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import Arch, InputError, SearchSpace
from search_space.layer_genes import BOUNDARY, factor_of
from supernet.task_spec import TaskSpec, sequence_tokens


@dataclass(frozen=True)
class TokenLayout:
    """The tokens a layer sees: how many (a kept first token included), and their patch grid, if any."""

    tokens: int
    kept_first: int  # 1 where a [CLS] token stays apart from the merging, else 0
    grid: tuple[int, int] | None = None

    def group_size(self, factor: int) -> int:
        """Tokens merged into one by a reduction of `factor`."""
        return factor if self.grid is None else factor * factor

    def reduced(self, factor: int) -> TokenLayout:
        """The layout after a reduction by `factor`; InputError where it cannot be made."""
        if factor == 1:
            return self
        body = self.tokens - self.kept_first
        if self.grid is None:
            if factor > body:
                raise InputError(f"a reduction by {factor} of a sequence of {body} tokens would leave fewer than "
                                 f"one token")
            return TokenLayout(self.kept_first + -(-body // factor), self.kept_first)
        rows, cols = self.grid
        if rows % factor or cols % factor:
            raise InputError(f"a reduction by {factor}x{factor} does not divide the {rows}x{cols} patch grid"
                             + (" (it would leave fewer than one token)" if factor > min(rows, cols) else ""))
        return TokenLayout(self.kept_first + (rows // factor) * (cols // factor), self.kept_first,
                           (rows // factor, cols // factor))


def input_layout(task: TaskSpec) -> TokenLayout:
    """The tokens the first layer sees."""
    style = task.style
    kept = 1 if style.cls_token or (style.pooling == "cls" and task.patch_grid is None) else 0
    return TokenLayout(sequence_tokens(task), kept, task.patch_grid)


def layer_layouts(task: TaskSpec, arch: Arch) -> list[TokenLayout]:
    """The tokens each layer of `arch` sees, after the reduction before it."""
    layout, layouts = input_layout(task), []
    for i in range(arch.depth):
        layout = layout.reduced(factor_of(arch, i))
        layouts.append(layout)
    return layouts


def _groups(x: Tensor, layout: TokenLayout, factor: int) -> Tensor:
    """(batch, tokens, d) -> (batch, groups, group, d): the tokens after the kept one, group by group.
    """
    body = x[:, layout.kept_first:]
    batch, tokens = body.shape[:2]
    if layout.grid is None:
        pad = -tokens % factor
        if pad:  # the last group is shorter: zeros, counted as padding
            body = F.pad(body, (0, 0, 0, pad))
        return body.reshape(batch, (tokens + pad) // factor, factor, -1)
    rows, cols = layout.grid
    grid = body.reshape(batch, rows // factor, factor, cols // factor, factor, -1)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(batch, (rows // factor) * (cols // factor), factor * factor, -1)


def _real(x: Tensor, mask: Tensor | None, layout: TokenLayout, factor: int) -> Tensor | None:
    """(batch or 1, groups, group, 1): 1 at real tokens; None where every group is whole and real."""
    if mask is None:
        if layout.grid is not None or (layout.tokens - layout.kept_first) % factor == 0:
            return None
        ones = torch.ones(1, layout.tokens, 1, dtype=x.dtype, device=x.device)
        return _groups(ones, layout, factor)
    return _groups(mask[..., None].to(x.dtype), layout, factor)


def reduce_tokens(x: Tensor, mask: Tensor | None, layout: TokenLayout, factor: int, norm_weight: Tensor,
                  norm_bias: Tensor, eps: float, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor | None]:
    """Tokens x (batch, tokens, d) merged group by group: the mean of each group's real tokens plus the
    projection `weight` (d, group * d) of its normalized tokens; and the mask, pooled."""
    groups = _groups(x, layout, factor)
    real = _real(x, mask, layout, factor)
    normed = F.layer_norm(groups, (x.shape[-1],), norm_weight, norm_bias, eps)
    if real is None:
        pooled = groups.mean(dim=2)
    else:
        pooled = (groups * real).sum(dim=2) / real.sum(dim=2).clamp_min(1.0)
        normed = normed * real
    merged = pooled + F.linear(normed.reshape(*normed.shape[:2], -1), weight, bias)
    kept = x[:, :layout.kept_first]
    out = torch.cat([kept, merged], dim=1) if layout.kept_first else merged
    if mask is None:
        return out, None
    pooled_mask = real[..., 0].sum(dim=2) > 0
    return out, torch.cat([mask[:, :layout.kept_first], pooled_mask], dim=1) if layout.kept_first else pooled_mask


class Reduction(nn.Module):
    """The static reduction of one stage boundary: a LayerNorm and the projection of a group's tokens."""

    # its graph holds these (the groups' reshapes; the exporter fixes even the width)
    graph_settings = ("factor", "grid", "kept_first", "merged_width")

    def __init__(self, norm: nn.LayerNorm, projection: nn.Linear, layout: TokenLayout, factor: int):
        super().__init__()
        self.norm, self.projection = norm, projection
        self.layout, self.factor = layout, factor
        self.grid, self.kept_first, self.merged_width = layout.grid, layout.kept_first, norm.normalized_shape[0]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        h, pooled = reduce_tokens(x, mask, self.layout, self.factor, self.norm.weight, self.norm.bias, self.norm.eps,
                                  self.projection.weight, self.projection.bias)
        return h if mask is None else (h, pooled)


class ElasticReduction(nn.Module):
    """A boundary's reductions in the supernet: one LayerNorm, and for each factor a (width, group, width)
    projection and its bias, zero at start, sliced to the active width."""

    def __init__(self, width: int, factors: tuple[int, ...], group_size, eps: float = 1e-5):
        """`group_size(factor)`: the tokens a reduction by `factor` merges into one (`TokenLayout.group_size`)."""
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        merging = [f for f in factors if f > 1]
        self.weight = nn.ParameterDict({str(f): nn.Parameter(torch.zeros(width, group_size(f), width))
                                        for f in merging})
        self.bias = nn.ParameterDict({str(f): nn.Parameter(torch.zeros(width)) for f in merging})

    def _sliced(self, width: int, factor: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        weight = self.weight[str(factor)][:width, :, :width].reshape(width, -1)
        return self.norm.weight[:width], self.norm.bias[:width], weight, self.bias[str(factor)][:width]

    def forward(self, x: Tensor, mask: Tensor | None, layout: TokenLayout, factor: int
                ) -> tuple[Tensor, Tensor | None]:
        norm_weight, norm_bias, weight, bias = self._sliced(x.shape[-1], factor)
        return reduce_tokens(x, mask, layout, factor, norm_weight, norm_bias, self.norm.eps, weight, bias)

    def get_active_subnet(self, width: int, layout: TokenLayout, factor: int) -> Reduction:
        norm_weight, norm_bias, weight, bias = (t.detach().clone() for t in self._sliced(width, factor))
        norm = nn.LayerNorm(width, eps=self.norm.eps)
        norm.weight, norm.bias = nn.Parameter(norm_weight), nn.Parameter(norm_bias)
        projection = nn.Linear(weight.shape[1], width)
        projection.weight, projection.bias = nn.Parameter(weight), nn.Parameter(bias)
        return Reduction(norm, projection, layout, factor)


def elastic_boundaries(space: SearchSpace, task: TaskSpec, width: int) -> nn.ModuleDict:
    """The supernet's boundaries, by the index of the layer each comes before (where some factor merges)."""
    factors = [getattr(layer, BOUNDARY.key) or (1,) for layer in space.layers]
    return nn.ModuleDict({str(i): ElasticReduction(width, f, input_layout(task).group_size, task.style.norm_eps)
                          for i, f in enumerate(factors) if max(f) > 1})


def boundary_parameter_count(space: SearchSpace, task: TaskSpec, index: int, width: int) -> int:
    """The supernet's parameters for the boundary before layer `index`: a norm, and a projection per factor."""
    factors = [f for f in getattr(space.layers[index], BOUNDARY.key) or () if f > 1]
    if not factors:
        return 0
    return 2 * width + sum(width * input_layout(task).group_size(f) * width + width for f in factors)


def check_boundaries(space: SearchSpace, task: TaskSpec) -> None:
    """Refuse a boundary that some arch would put where it leaves no token or does not divide the grid."""
    first = input_layout(task)
    layouts = {first}  # the token layouts some arch may feed each layer
    for i, layer in enumerate(space.layers):
        reached = set()
        for layout in sorted(layouts, key=lambda t: t.tokens):
            for factor in layer.gene_values(BOUNDARY.key):
                try:
                    reached.add(layout.reduced(factor or 1))
                except InputError as exc:
                    before = "" if layout == first else " after the boundaries an arch may put before it"
                    raise InputError(f"space {space.name!r}: layer {i}'s stage boundary (reduce {factor}){before}: "
                                     f"{exc}") from None
        layouts = reached


def boundary_operations(space: SearchSpace) -> list[str]:
    """The operations of `boundary_costs` that are a boundary's alone (its pooling), where the space has
    boundaries: the latency features give each its own MACs and calls."""
    return ["reduction"] if space.has_gene(BOUNDARY.key) else []


def boundary_costs(arch: Arch, index: int, layouts: list[TokenLayout],
                   width: int) -> list[tuple[str, int, int, int, bool]]:
    """What the stage boundary before layer `index` costs, per operation (none where it starts no stage):
    (operation, parameters, MACs of one sample, bytes as the artifact stores them: fp32, whether it is a call
    of its own for the latency features). `layouts`: the input's, then each layer's."""
    factor = factor_of(arch, index)
    if factor == 1:
        return []
    size, merged = layouts[index].group_size(factor), layouts[index + 1].tokens - layouts[index].kept_first
    return [("norm", 2 * width, 2 * merged * size * width, 4 * 2 * width, False),  # its tokens' norm,
            ("reduction", 0, merged * size * width, 0, True),  # their pooling,
            ("linear@32", size * width * width + width, merged * size * width * width,  # the projection of a group
             4 * size * width * width + 4 * width, True)]
