"""`fourier`: FNet's Fourier transform, a mixer without weights (FlexiBERT's heterogeneous spaces).

The real part of the 2-D DFT over the tokens and the features, as two matrix products with fixed cosine
and sine matrices (Re(F_T X F_D) = C_T X C_D - S_T X S_D), scaled to be orthonormal (1 / sqrt(tokens *
features)) so that the residual stream keeps its scale. Over a padded text each sample's DFT spans its own
real tokens, so that padding changes nothing. ONNX Runtime's DFT operator measured 2.6-5.7x slower than
these products. The same functions serve the supernet and the extracted model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from supernet.mixers.base import Mixer, MixerShape, register

_FIXED: dict[tuple, tuple[Tensor, Tensor]] = {}


def _cached(key: tuple, make) -> tuple[Tensor, Tensor]:
    if key in _FIXED:
        return _FIXED[key]
    value = make()
    if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):  # a traced value is not a tensor
        _FIXED[key] = value
    return value


def _dft(size: int, device, dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of 2 pi j k / size, divided by sqrt(size): an orthonormal DFT's real and imaginary parts."""
    index = torch.arange(size, device=device)
    turns = (index[:, None] * index[None, :]) % size  # exact in integers: the angle stays in [0, 2 pi)
    angle = turns.to(dtype) * (2 * math.pi / size)
    scale = size ** -0.5
    return angle.cos() * scale, angle.sin() * scale


def feature_dft(width: int, device, dtype) -> tuple[Tensor, Tensor]:
    """The DFT over `width` features (cached: it depends on the width alone)."""
    return _cached(("features", width, str(device), dtype), lambda: _dft(width, device, dtype))


def token_dft(tokens: int, mask: Tensor | None, device, dtype) -> tuple[Tensor, Tensor]:
    """The DFT over the tokens: (tokens, tokens), or with a padding mask (batch, tokens, tokens), each
    sample's over its own real tokens (numbered in order, padding anywhere), zero at padded ones."""
    if mask is None:
        return _cached(("tokens", tokens, str(device), dtype), lambda: _dft(tokens, device, dtype))
    real = mask.long()
    position = (torch.cumsum(real, dim=1) - 1) * real  # (batch, tokens): a real token's index among the real
    length = real.sum(dim=1).clamp_min(1)[:, None, None]  # (batch, 1, 1)
    turns = (position[:, :, None] * position[:, None, :]) % length
    angle = turns.to(dtype) * (2 * math.pi) / length.to(dtype)
    both = (mask[:, :, None] & mask[:, None, :]).to(dtype) * torch.rsqrt(length.to(dtype))
    return angle.cos() * both, angle.sin() * both


def fourier_mix(x: Tensor, mask: Tensor | None, feature_cos: Tensor, feature_sin: Tensor,
                tokens: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Re(DFT over tokens and features) of x (batch, tokens, features), orthonormal; `tokens`: the
    tokens' DFT where the caller holds it (else made here)."""
    token_cos, token_sin = tokens or token_dft(x.shape[1], mask, x.device, x.dtype)
    return token_cos @ (x @ feature_cos) - token_sin @ (x @ feature_sin)


class FourierMixer(nn.Module):
    """The static `fourier` sublayer: no weights but its width's DFT, and for inputs without padding of
    `tokens` tokens the tokens' DFT, held as buffers: an exported graph takes them as inputs (one graph
    serves every width), and does not compute them at every call (ONNX Runtime did not fold them: a
    512-token layer took 4x longer)."""

    graph_settings = ("tokens",)  # its graph differs with and without the tokens' DFT

    def __init__(self, width: int, tokens: int | None = None):
        super().__init__()
        self.tokens = tokens
        for name, value in zip(("feature_cos", "feature_sin"), _dft(width, "cpu", torch.float32), strict=True):
            self.register_buffer(name, value)
        token_dft_ = _dft(tokens, "cpu", torch.float32) if tokens else (None, None)
        for name, value in zip(("token_cos", "token_sin"), token_dft_, strict=True):
            self.register_buffer(name, value)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        held = mask is None and self.token_cos is not None and x.shape[1] == self.token_cos.shape[0]
        return fourier_mix(x, mask, self.feature_cos, self.feature_sin,
                           (self.token_cos, self.token_sin) if held else None)


@register
class Fourier(Mixer):
    kind = grammar = "fourier"
    has_heads = False
    projected = False  # no output projection: the DFT is the sublayer
    projections = ()

    def forward(self, layer, x, name, num_heads, bits, mask):
        return fourier_mix(x, mask, *feature_dft(x.shape[-1], x.device, x.dtype))

    def extract(self, layer, width, name, num_heads, bits, tokens):
        return FourierMixer(width, tokens)

    def macs(self, name: str, shape: MixerShape) -> int:
        # the cosine and sine matrices over the features, then over the tokens
        return 2 * shape.tokens * shape.width * shape.width + 2 * shape.tokens * shape.tokens * shape.width

    def weight_bytes(self, name: str, shape: MixerShape) -> int:
        """The DFT matrices the artifact holds: the features', and for unpadded inputs the tokens'."""
        held = shape.fixed_tokens or 0
        return 2 * 4 * (shape.width * shape.width + held * held)
