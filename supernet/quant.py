"""Fake quantization with a straight-through estimator.

Weights: per output channel, symmetric. Activations: per tensor, affine,
computed from the tensor itself (dynamic), as dynamic int8 kernels do at run
time. 32 bits means off. The same functions serve the supernet's active path
and the extracted static model, so both compute the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

FULL_PRECISION = 32

# Data-parallel training gives each process a shard of the batch, whose activation range is not the
# batch's. A group installs a reducer (an all-reduce of the range) while it trains, so that every
# process quantizes with the whole batch's range, as one process would.
_range_reducer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None


@contextlib.contextmanager
def shared_activation_ranges(reduce: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]):
    """Within the block, the (low, high) range of every fake-quantized activation goes through `reduce`."""
    global _range_reducer
    previous, _range_reducer = _range_reducer, reduce
    try:
        yield
    finally:
        _range_reducer = previous


def _straight_through(x: Tensor, quantized: Tensor) -> Tensor:
    # forward: the quantized values; backward: the identity
    return x + (quantized - x).detach()


def weight_grid(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The integers (as floats) and per-output-channel scales (out, 1) of `weight` at `bits`: what
    training simulates and what runtimes store as int8."""
    qmax = 2 ** (bits - 1) - 1
    scale = weight.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / qmax
    return torch.clamp(torch.round(weight / scale), -qmax, qmax), scale


def fake_quantize_weight(weight: Tensor, bits: int) -> Tensor:
    if bits >= FULL_PRECISION:
        return weight
    integers, scale = weight_grid(weight, bits)
    return _straight_through(weight, integers * scale)


def fake_quantize_activation(x: Tensor, bits: int) -> Tensor:
    if bits >= FULL_PRECISION:
        return x
    levels = 2**bits - 1
    low = x.detach().amin().clamp(max=0.0)  # the range always holds 0, as real kernels require
    high = x.detach().amax().clamp(min=0.0)
    if _range_reducer is not None:
        low, high = _range_reducer(low, high)
    scale = ((high - low) / levels).clamp_min(1e-8)
    zero_point = torch.round(-low / scale)
    quantized = (torch.clamp(torch.round(x / scale) + zero_point, 0, levels) - zero_point) * scale
    return _straight_through(x, quantized)


def quantized_linear(x: Tensor, weight: Tensor, bias: Tensor | None, bits: int) -> Tensor:
    return torch.nn.functional.linear(fake_quantize_activation(x, bits), fake_quantize_weight(weight, bits), bias)


class QuantLinear(torch.nn.Linear):
    """A static Linear layer that runs at `bits` with fake quantization.

    Export turns the 8-bit ones into real int8 kernels; this class keeps the
    training-time numerics so that an extracted model equals the supernet.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = FULL_PRECISION):
        super().__init__(in_features, out_features, bias=bias)
        self.bits = bits

    def forward(self, x: Tensor) -> Tensor:
        return quantized_linear(x, self.weight, self.bias, self.bits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}"
