"""Token-mixing kernels. All share the Q/K/V/O projections (DESIGN decision 6);
only the mixing differs. A new kernel is one small class plus `register`.

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

from search_space import register_attention_type


class AttentionKernel(nn.Module):
    name: str = ""

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


KERNELS: dict[str, type[AttentionKernel]] = {}


def register(kernel: type[AttentionKernel]) -> type[AttentionKernel]:
    KERNELS[kernel.name] = kernel
    register_attention_type(kernel.name)
    return kernel


for _kernel in (SoftmaxAttention, LinearAttention, LocalAttention):
    register(_kernel)


def make_kernel(name: str, window: int) -> AttentionKernel:
    return KERNELS[name](window)
