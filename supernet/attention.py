"""Token-mixing kernels. All share the Q/K/V/O projections (DESIGN decision 6);
only the mixing differs. A new kernel is one small class plus `register`.

Every kernel maps q, k, v of shape (batch, heads, tokens, head_dim) to the
same shape; `window` is the space's local window (tokens each side).
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

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class SoftmaxAttention(AttentionKernel):
    name = "softmax"

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v)


class LinearAttention(AttentionKernel):
    """Kernelized attention (Katharopoulos et al., 2020): phi(x) = elu(x) + 1,
    out_i = phi(q_i) . sum_j phi(k_j) v_j^T / phi(q_i) . sum_j phi(k_j); linear in tokens."""

    name = "linear"

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
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

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        tokens = q.shape[-2]
        if self.window >= tokens - 1:
            return F.scaled_dot_product_attention(q, k, v)
        if tokens < self._UNFOLD_FROM:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(tokens, self.window, q.device))
        return self._sliding(q, k, v)

    def _sliding(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        w = self.window
        span = 2 * w + 1
        # keys padded by w each side, then each query sees its own span of 2w + 1
        k_windows = F.pad(k, (0, 0, w, w)).unfold(2, span, 1)  # (b, h, t, d, span)
        v_windows = F.pad(v, (0, 0, w, w)).unfold(2, span, 1)
        scores = torch.einsum("bhtd,bhtds->bhts", q, k_windows) * q.shape[-1] ** -0.5
        tokens = q.shape[-2]
        position = torch.arange(tokens, device=q.device).unsqueeze(1) + torch.arange(span, device=q.device) - w
        scores = scores.masked_fill((position < 0) | (position >= tokens), float("-inf"))
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
