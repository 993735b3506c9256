"""Attention mixers: `softmax`, `linear` and `local`. All share the Q/K/V/O projections (DESIGN decision
6) and split them into heads; only the kernel that mixes the heads differs. A new kernel is one small
class and a `HeadAttention` definition naming it.

Every kernel maps q, k, v of shape (batch, heads, tokens, head_dim) to the
same shape; `window` is the space's local window (tokens each side). `mask`
(batch, tokens), where given, is True at real tokens: no query sees a padded
key, except that a padded query sees itself (so that no row is empty: its
output is finite and read by nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.mixers.base import Mixer, MixerShape, register


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


def mix_heads(q: Tensor, k: Tensor, v: Tensor, kernel: AttentionKernel, num_heads: int,
              mask: Tensor | None) -> Tensor:
    """(batch, tokens, heads * head_dim) projections -> kernel per head -> merged."""
    batch, tokens, inner = q.shape
    split = lambda t: t.view(batch, tokens, num_heads, inner // num_heads).transpose(1, 2)  # noqa: E731
    return kernel(split(q), split(k), split(v), mask).transpose(1, 2).reshape(batch, tokens, inner)


class Attention(nn.Module):
    """The static attention sublayer."""

    # the reshapes to heads hold both (the exporter writes the head's width as a constant: a graph cached for
    # one head_dim failed on another's weights)
    graph_settings = ("num_heads", "head_dim")

    def __init__(self, query: nn.Linear, key: nn.Linear, value: nn.Linear, out: nn.Linear,
                 kernel: AttentionKernel, num_heads: int):
        super().__init__()
        self.query, self.key, self.value, self.out = query, key, value, out
        self.kernel = kernel
        self.num_heads, self.head_dim = num_heads, query.out_features // num_heads

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(mix_heads(self.query(x), self.key(x), self.value(x), self.kernel, self.num_heads, mask))


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
        return mix_heads(project("query"), project("key"), project("value"), kernel, num_heads, mask)

    def extract(self, layer, width, name, num_heads, bits, tokens):
        inner = num_heads * layer.head_dim
        return Attention(query=layer.query.get_active_subnet(width, inner, bits),
                         key=layer.key.get_active_subnet(width, inner, bits),
                         value=layer.value.get_active_subnet(width, inner, bits),
                         out=layer.out.get_active_subnet(inner, width, bits),
                         kernel=make_kernel(name, layer.local_window), num_heads=num_heads)

    def macs(self, name: str, shape: MixerShape) -> int:
        return 2 * shape.tokens * shape.tokens * shape.inner  # scores and their weighted sum


@register
class Softmax(HeadAttention):
    kernel = SoftmaxAttention


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


for _kernel_class in (SoftmaxAttention, LinearAttention, LocalAttention):
    KERNELS[_kernel_class.name] = _kernel_class
