"""Fake quantization with a straight-through estimator.

Each bit width simulates the kernel that runs it (see
`predictors/runtimes/onnx_runtime.py`), so that an evaluated model computes
what its artifact computes:

- 8 bits: weights per output channel, symmetric; activations per tensor,
  affine, computed from the tensor itself (dynamic), as dynamic int8 kernels
  do at run time.
- 4 and 2 bits: weights in blocks of `block_size` consecutive inputs of an
  output channel, symmetric, one scale per block (ONNX Runtime's
  `MatMulNBits`); activations per row and block, symmetric int8, as that
  kernel quantizes them (its `accuracy_level` 4).
- Tables (token, position and token-type embeddings): each row on its own
  symmetric scale.

32 bits means off. The same functions serve the supernet's active path and
the extracted static model, so both compute the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from search_space.registry import DEFAULT_QUANT_BLOCK_SIZE as DEFAULT_BLOCK_SIZE

FULL_PRECISION = 32
BYTE_BITS = 8  # 8 bits: per-channel int8; fewer: block-wise
_INT8_MAX = 127

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


def _symmetric(values: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """Integers (as floats) and scales of `values` on one symmetric scale per last-axis row."""
    scale = values.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / qmax
    return torch.clamp(torch.round(values / scale), -qmax, qmax), scale


def weight_grid(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The integers (as floats) and per-output-channel scales (out, 1) of `weight` at `bits`: what
    8-bit training simulates and what runtimes store as int8."""
    return _symmetric(weight, 2 ** (bits - 1) - 1)


def block_grid(weight: Tensor, bits: int, block_size: int) -> tuple[Tensor, Tensor]:
    """The integers (out, blocks, block_size) and scales (out, blocks, 1) of `weight` at `bits`, one
    scale per block of `block_size` consecutive inputs: what `MatMulNBits` stores."""
    out_features, in_features = weight.shape
    return _symmetric(weight.reshape(out_features, in_features // block_size, block_size), 2 ** (bits - 1) - 1)


def fake_quantize_weight(weight: Tensor, bits: int, block_size: int = DEFAULT_BLOCK_SIZE) -> Tensor:
    if bits >= FULL_PRECISION:
        return weight
    if bits >= BYTE_BITS:
        integers, scale = weight_grid(weight, bits)
        return _straight_through(weight, integers * scale)
    integers, scale = block_grid(weight, bits, block_size)
    return _straight_through(weight, (integers * scale).reshape(weight.shape))


def fake_quantize_activation(x: Tensor, bits: int, block_size: int = DEFAULT_BLOCK_SIZE) -> Tensor:
    if bits >= FULL_PRECISION:
        return x
    if bits < BYTE_BITS:  # MatMulNBits' int8 compute: each row's blocks on their own symmetric scale
        integers, scale = _symmetric(x.reshape(*x.shape[:-1], -1, block_size), _INT8_MAX)
        return _straight_through(x, (integers * scale).reshape(x.shape))
    levels = 2**bits - 1
    low = x.detach().amin().clamp(max=0.0)  # the range always holds 0, as real kernels require
    high = x.detach().amax().clamp(min=0.0)
    if _range_reducer is not None:
        low, high = _range_reducer(low, high)
    scale = ((high - low) / levels).clamp_min(1e-8)
    zero_point = torch.round(-low / scale)
    quantized = (torch.clamp(torch.round(x / scale) + zero_point, 0, levels) - zero_point) * scale
    return _straight_through(x, quantized)


def fake_quantize_rows(rows: Tensor, bits: int) -> Tensor:
    """Rows of a table at `bits`, each on its own symmetric scale (a row's scale is its own, so
    quantizing the rows a lookup read equals reading the quantized table)."""
    if bits >= FULL_PRECISION:
        return rows
    integers, scale = _symmetric(rows, 2 ** (bits - 1) - 1)
    return _straight_through(rows, integers * scale)


def quantized_linear(x: Tensor, weight: Tensor, bias: Tensor | None, bits: int,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> Tensor:
    return F.linear(fake_quantize_activation(x, bits, block_size), fake_quantize_weight(weight, bits, block_size),
                    bias)


class QuantLinear(torch.nn.Linear):
    """A static Linear layer that runs at `bits` with fake quantization.

    Export turns it into the runtime's kernel for `bits`; this class keeps the
    training-time numerics so that an extracted model equals the supernet.
    """

    graph_settings = ("bits", "block_size")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = FULL_PRECISION,
                 block_size: int = DEFAULT_BLOCK_SIZE):
        super().__init__(in_features, out_features, bias=bias)
        self.bits, self.block_size = bits, block_size

    def forward(self, x: Tensor) -> Tensor:
        return quantized_linear(x, self.weight, self.bias, self.bits, self.block_size)

    def extra_repr(self) -> str:
        block = f", block_size={self.block_size}" if self.bits < BYTE_BITS else ""
        return f"{super().extra_repr()}, bits={self.bits}{block}"


class QuantTable(torch.nn.Module):
    """A static table of row vectors (an embedding) read at `bits`: called with ids, the rows they
    name; without, the whole table. Export stores it as integers and a scale per row."""

    graph_settings = ("bits",)

    def __init__(self, weight: Tensor, bits: int = BYTE_BITS):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.bits = bits

    def forward(self, ids: Tensor | None = None) -> Tensor:
        return fake_quantize_rows(self.weight if ids is None else F.embedding(ids, self.weight), self.bits)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, bits={self.bits}"
