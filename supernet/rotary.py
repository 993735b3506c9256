"""Rotary position embeddings (RoFormer; Llama, Qwen): a token's position is a rotation of its queries and
keys, so that their dot product depends on the distance between the two tokens alone.

Each head's vector is split in two halves (x1, x2); pair j of (x1[j], x2[j]) is rotated by the angle
position * theta^(-2j / head_dim), as Hugging Face's `rotate_half` lays it out. One pure function, shared by
the elastic and the static attention, and by a KV-cached decoding step that passes its own positions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_angles(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin, (..., tokens, head_dim), of the angles at integer `positions` (..., tokens)."""
    # as Hugging Face computes them (int64 exponents, then float), so that an imported model is exact
    inverse = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
                               / head_dim))
    angles = positions[..., None].float() * inverse  # (..., tokens, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """`x` (batch, heads, tokens, head_dim) rotated by the angles (batch or 1, tokens, head_dim)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.unsqueeze(1) + torch.cat([-second, first], dim=-1) * sin.unsqueeze(1)
