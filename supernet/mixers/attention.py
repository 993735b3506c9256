"""Attention mixers: `softmax`, `linear` and `local`, and a decoder's `causal` and `sliding`. All share the
Q/K/V/O projections (DESIGN decision 6) and split them into heads; only the kernel that mixes the heads
differs. A new kernel is one small class and a `HeadAttention` definition naming it.

Every kernel maps q, k, v of shape (batch, heads, tokens, head_dim) to the
same shape; `window` is the space's local window (tokens each side; a
`sliding` query's tokens back). `mask` (batch, tokens), where given, is True
at real tokens: no query sees a padded key, except that a padded query sees
itself (so that no row is empty: its output is finite and read by nothing).

How a model lays its heads out (`HeadLayout`: key and value heads shared by
groups of query heads, rotary positions, a norm over each head's queries and
keys) is applied by `mix_heads`, the one function of the elastic and the
static attention.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.mixers.base import Mixer, MixerShape, register
from supernet.rotary import rotary_angles, rotate


class AttentionKernel(nn.Module):
    name: str = ""
    graph_settings = ("window",)  # what its exported graph depends on (`supernet.subnet.graph_settings`)

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def _visible(mask: Tensor) -> Tensor:
    """(batch, 1, tokens, tokens): which keys each query may see under a padding mask."""
    tokens = mask.shape[-1]
    return mask[:, None, None, :] | torch.eye(tokens, dtype=torch.bool, device=mask.device)


class SoftmaxAttention(AttentionKernel):
    name = "softmax"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else _visible(mask))


def causal_band(queries: int, keys: int, window: int | None, device: torch.device) -> Tensor:
    """(queries, keys): True where a query may see a key: itself and the keys before it (within `window`
    tokens back, where given); the queries are the last `queries` of the keys' tokens (a KV cache's new ones)."""
    behind = (torch.arange(queries, device=device)[:, None] + keys - queries
              - torch.arange(keys, device=device)[None, :])
    return (behind >= 0) if window is None else (behind >= 0) & (behind <= window)


class CausalAttention(AttentionKernel):
    """Softmax over the keys up to the query's own position (a decoder's)."""

    name = "causal"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_band(q.shape[-2], q.shape[-2], None, q.device)
                                              & _visible(mask))


class SlidingAttention(AttentionKernel):
    """Causal softmax over the query's own token and the `window` tokens before it (Mistral's, Gemma's local
    layers): what a query sees, and a KV cache keeps, no longer grows with the context."""

    name = "sliding"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        visible = causal_band(q.shape[-2], q.shape[-2], self.window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible if mask is None else visible & _visible(mask))


class LinearAttention(AttentionKernel):
    """Kernelized attention (Katharopoulos et al., 2020): phi(x) = elu(x) + 1,
    out_i = phi(q_i) . sum_j phi(k_j) v_j^T / phi(q_i) . sum_j phi(k_j); linear in tokens."""

    name = "linear"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        if mask is not None:  # a padded key adds nothing to the sums
            k = k * mask[:, None, :, None].to(k.dtype)
        context = torch.einsum("bhtd,bhte->bhde", k, v)
        normalizer = torch.einsum("bhtd,bhd->bht", q, k.sum(dim=2)).unsqueeze(-1)
        return torch.einsum("bhtd,bhde->bhte", q, context) / normalizer.clamp_min(1e-6)


class LocalAttention(AttentionKernel):
    """Softmax over the `window` tokens on each side of a query.

    Short sequences use a cached band mask with the fused kernel; long ones a
    sliding window (unfold), whose cost grows linearly with the tokens.
    """

    name = "local"
    _UNFOLD_FROM = 128  # tokens; below this the masked fused kernel is faster here

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        tokens = q.shape[-2]
        if self.window >= tokens - 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else _visible(mask))
        if tokens < self._UNFOLD_FROM:
            band = _band_mask(tokens, self.window, q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=band if mask is None else band & _visible(mask))
        return self._sliding(q, k, v, mask)

    def _sliding(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        w = self.window
        span = 2 * w + 1
        # keys padded by w each side, then each query sees its own span of 2w + 1
        k_windows = F.pad(k, (0, 0, w, w)).unfold(2, span, 1)  # (b, h, t, d, span)
        v_windows = F.pad(v, (0, 0, w, w)).unfold(2, span, 1)
        scores = torch.einsum("bhtd,bhtds->bhts", q, k_windows) * q.shape[-1] ** -0.5
        tokens = q.shape[-2]
        position = torch.arange(tokens, device=q.device).unsqueeze(1) + torch.arange(span, device=q.device) - w
        hidden = (position < 0) | (position >= tokens)
        if mask is not None:  # padded keys too, but a query's own position stays visible
            padded = ~F.pad(mask, (w, w), value=False).unfold(1, span, 1)  # (b, t, span)
            hidden = hidden | (padded & (position != torch.arange(tokens, device=q.device).unsqueeze(1)))[:, None]
        scores = scores.masked_fill(hidden, float("-inf"))
        return torch.einsum("bhts,bhtds->bhtd", scores.softmax(dim=-1), v_windows)


_MASKS: dict[tuple[int, int, str], Tensor] = {}


def _band_mask(tokens: int, window: int, device: torch.device) -> Tensor:
    key = (tokens, window, str(device))
    if key in _MASKS:
        return _MASKS[key]
    index = torch.arange(tokens, device=device)
    mask = (index[None, :] - index[:, None]).abs() <= window
    if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):  # a traced mask is not a tensor
        _MASKS[key] = mask
    return mask


@dataclass(frozen=True)
class HeadLayout:
    """How a model's heads are laid out: an encoder's default, or a decoder's (`ModelStyle`)."""

    heads_per_kv: int = 1  # query heads sharing one key and value head (grouped-query attention)
    rope_theta: float | None = None  # rotary positions of this base; None: positions are added to the tokens

    def kv_heads(self, num_heads: int) -> int:
        return num_heads // self.heads_per_kv


def positioned_heads(q: Tensor, k: Tensor, v: Tensor, num_heads: int, layout: HeadLayout,
                     q_norm: nn.Module | None, k_norm: nn.Module | None, positions: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """(batch, tokens, heads * head_dim) queries and (batch, tokens, kv heads * head_dim) keys and values ->
    (batch, heads, tokens, head_dim) each: each head's norm, and its rotation at `positions` (batch or 1,
    tokens; default 0, 1, ...), where the layout has them. Keys and values keep their own heads."""
    batch, tokens, inner = q.shape
    head_dim = inner // num_heads
    split = lambda t: t.view(batch, tokens, -1, head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    if q_norm is not None:
        q, k = q_norm(q), k_norm(k)
    if layout.rope_theta is not None:
        if positions is None:
            positions = torch.arange(tokens, device=q.device)[None]
        cos, sin = rotary_angles(positions, head_dim, layout.rope_theta)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    return q, k, v


def shared_kv(k: Tensor, v: Tensor, layout: HeadLayout) -> tuple[Tensor, Tensor]:
    """Keys and values repeated for the query heads they serve: head j serves query heads j * group to
    (j + 1) * group - 1 (grouped-query attention)."""
    if layout.heads_per_kv == 1:
        return k, v
    return k.repeat_interleave(layout.heads_per_kv, dim=1), v.repeat_interleave(layout.heads_per_kv, dim=1)


def merged_heads(out: Tensor) -> Tensor:
    """(batch, heads, tokens, head_dim) -> (batch, tokens, heads * head_dim)."""
    batch, heads, tokens, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def mix_heads(q: Tensor, k: Tensor, v: Tensor, kernel: AttentionKernel, num_heads: int,
              mask: Tensor | None, layout: HeadLayout = HeadLayout(), q_norm: nn.Module | None = None,
              k_norm: nn.Module | None = None) -> Tensor:
    """Projections -> heads (normed and rotated where the layout says) -> kernel per head -> merged."""
    q, k, v = positioned_heads(q, k, v, num_heads, layout, q_norm, k_norm)
    return merged_heads(kernel(q, *shared_kv(k, v, layout), mask))


def cached_visibility(queries: int, keys: int, key_mask: Tensor, window: int | None) -> Tensor:
    """(batch, 1, queries, keys): which cached keys each of the `queries` newest tokens sees: the keys up to
    its own (the last `queries` keys are the new tokens'), not padded (`key_mask`, (batch, keys), True at
    real tokens), and within `window` tokens back where given (a sliding window)."""
    visible = causal_band(queries, keys, window, key_mask.device)
    own = causal_band(queries, keys, 0, key_mask.device)  # a padded query sees itself, so that no row is empty
    return (visible[None] & key_mask[:, None, :])[:, None] | own


class Attention(nn.Module):
    """The static attention sublayer."""

    # the reshapes to heads hold both (the exporter writes the head's width as a constant: a graph cached for
    # one head_dim failed on another's weights)
    graph_settings = ("num_heads", "head_dim", "layout")

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, out: nn.Linear,
                 kernel: AttentionKernel, num_heads: int, layout: HeadLayout = HeadLayout(),
                 q_norm: nn.Module | None = None, k_norm: nn.Module | None = None):
        super().__init__()
        self.query, self.key, self.value, self.out = query, key, value, out
        self.kernel = kernel
        self.num_heads, self.head_dim = num_heads, query.out_features // num_heads
        self.layout, self.q_norm, self.k_norm = layout, q_norm, k_norm

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(mix_heads(self.query(x), self.key(x), self.value(x), self.kernel, self.num_heads, mask,
                                  self.layout, self.q_norm, self.k_norm))

    def cached(self, x: Tensor, positions: Tensor, key_mask: Tensor, past_key: Tensor, past_value: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """A decoder's new tokens `x` (batch, new, width) at `positions` (batch, new) over its KV cache
        (batch, kv heads, past, head_dim): (output, present key, present value), the present holding the
        past and the new tokens' keys and values (rotated). `key_mask` (batch, past + new): True at real
        tokens. A causal or sliding kernel only (its `window` bounds what a query sees)."""
        q, k, v = positioned_heads(self.query(x), self.key(x), self.value(x), self.num_heads, self.layout,
                                   self.q_norm, self.k_norm, positions)
        key, value = torch.cat([past_key, k], dim=2), torch.cat([past_value, v], dim=2)
        window = self.kernel.window if isinstance(self.kernel, SlidingAttention) else None
        visible = cached_visibility(x.shape[1], key.shape[2], key_mask, window)
        out = grouped_attention(q, key, value, visible, self.layout.heads_per_kv)
        return self.out(merged_heads(out)), key, value


def grouped_attention(q: Tensor, key: Tensor, value: Tensor, visible: Tensor, group: int) -> Tensor:
    """Softmax attention of q (batch, heads, queries, head_dim) over key and value (batch, kv heads, keys,
    head_dim) where `visible` (batch, 1, queries, keys), each key-value head serving its `group` query heads
    where it lies: a decoding step reads its cache once, and copies none of it (`shared_kv` repeats it)."""
    batch, heads, queries, head_dim = q.shape
    grouped = q.view(batch, heads // group, group, queries, head_dim)  # query heads j * group ... by kv head j
    scores = grouped @ key.unsqueeze(2).transpose(-1, -2) * head_dim ** -0.5  # (b, kv, group, queries, keys)
    scores = scores.masked_fill(~visible.unsqueeze(2), float("-inf"))
    return (scores.softmax(dim=-1) @ value.unsqueeze(2)).view(batch, heads, queries, head_dim)


KERNELS: dict[str, type[AttentionKernel]] = {}
_SHARED: dict[tuple[str, int], AttentionKernel] = {}


def make_kernel(name: str, window: int) -> AttentionKernel:
    return KERNELS[name](window)


def _kernel(name: str, window: int) -> AttentionKernel:
    """One kernel module per (name, window) for the elastic layers: kernels hold no weights."""
    if (name, window) not in _SHARED:
        _SHARED[(name, window)] = make_kernel(name, window)
    return _SHARED[(name, window)]


class HeadAttention(Mixer):
    """Attention by one kernel over the heads of the shared projections."""

    kernel: type[AttentionKernel]

    def __init__(self):
        self.kind = self.grammar = self.kernel.name

    def mix(self, layer, project, name, num_heads, mask):
        kernel = _kernel(name, layer.local_window)
        return mix_heads(project("query"), project("key"), project("value"), kernel, num_heads, mask,
                         layer.layout, layer.q_norm, layer.k_norm)

    def extract(self, layer, width, name, num_heads, bits, tokens):
        inner, kv_inner = num_heads * layer.head_dim, layer.layout.kv_heads(num_heads) * layer.head_dim
        return Attention(query=layer.query.get_active_subnet(width, inner, bits),
                         key=layer.key.get_active_subnet(width, kv_inner, bits),
                         value=layer.value.get_active_subnet(width, kv_inner, bits),
                         out=layer.out.get_active_subnet(inner, width, bits),
                         kernel=make_kernel(name, layer.local_window), num_heads=num_heads, layout=layer.layout,
                         q_norm=None if layer.q_norm is None else copy.deepcopy(layer.q_norm),
                         k_norm=None if layer.k_norm is None else copy.deepcopy(layer.k_norm))

    def macs(self, name: str, shape: MixerShape) -> int:
        return 2 * shape.tokens * shape.tokens * shape.inner  # scores and their weighted sum


@register
class Softmax(HeadAttention):
    kernel = SoftmaxAttention


@register
class Causal(HeadAttention):
    kernel = CausalAttention
    causal = True

    def macs(self, name: str, shape: MixerShape) -> int:
        return shape.tokens * (shape.tokens + 1) * shape.inner  # each query's keys up to its own


@register
class Sliding(HeadAttention):
    kernel = SlidingAttention
    causal = True

    def macs(self, name: str, shape: MixerShape) -> int:
        seen = sum(min(t + 1, shape.local_window + 1) for t in range(shape.tokens))
        return 2 * seen * shape.inner


@register
class Linear(HeadAttention):
    kernel = LinearAttention

    def macs(self, name: str, shape: MixerShape) -> int:
        return 2 * shape.tokens * shape.inner * shape.head_dim  # linear in the tokens


@register
class Local(HeadAttention):
    kernel = LocalAttention

    def macs(self, name: str, shape: MixerShape) -> int:
        window = shape.local_window
        if window < shape.tokens - 1 and shape.tokens >= LocalAttention._UNFOLD_FROM:  # the sliding window
            return 2 * shape.tokens * (2 * window + 1) * shape.inner
        return super().macs(name, shape)  # the masked fused kernel costs what softmax does


for _kernel_class in (SoftmaxAttention, LinearAttention, LocalAttention, CausalAttention, SlidingAttention):
    KERNELS[_kernel_class.name] = _kernel_class
