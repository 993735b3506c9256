"""The quantized layers and tables of a subnet as ONNX Runtime's kernels (what `onnx_lowered` makes).

An 8-bit layer becomes ONNX Runtime's `DynamicQuantizeMatMul`: int8 weights on
the fake quantizer's per-output-channel grid (the same integers and scales),
activations quantized per tensor at run time to uint8 with a zero point, as
the fake quantizer simulates them. On an x86 CPU without VNNI, ONNX Runtime's
uint8 x int8 kernel adds pairs of products in 16 bits (VPMADDUBSW), which
full-range weights overflow (on one such CPU a digits model's logits moved by
7% of their range); there the weights are stored as uint8 with a zero point of
128 (the same integers, shifted), which its uint8 x uint8 kernel multiplies
exactly. With VNNI (or off x86) the int8 kernel is exact and is kept.

A 4- or 2-bit layer becomes `MatMulNBits`: its codes packed two (or four) to
a byte, one fp32 scale per block of `quant_block_size` inputs, the zero point
the kernel's default (the middle code), and `accuracy_level` 4: the kernel
quantizes each block of an input row to int8 on its own scale, which the fake
quantizer simulates. Level 4 was chosen by measurement: on one layer of
MiniLM's size at batch 1 it is 25-30% faster than level 0 (fp32 activations);
at batch 32 it is 20% slower (`bench/latency/quantized_layers.py`).

Embedding tables the space quantizes are stored as int8 with one fp32 scale
per row: a lookup gathers the codes and their rows' scales.
"""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from predictors.runtimes.base import with_quantized_layers_as
from supernet.quant import BYTE_BITS, QuantLinear, QuantTable, block_grid, weight_grid

NBITS_ACCURACY_LEVEL = 4  # MatMulNBits' int8 compute (see the module's docstring)


@functools.cache
def int8_kernel_saturates() -> bool:
    """Whether this CPU runs ONNX Runtime's uint8 x int8 product through 16-bit pair sums that
    overflow: x86 without VNNI (AVX2, and AVX-512 before VNNI)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: the exact kernel
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", flags) is None


def int8_weight_type() -> str:
    """How this machine's artifacts store 8-bit weights: "int8", or "uint8" where the int8 kernel saturates."""
    return "uint8" if int8_kernel_saturates() else "int8"


class DynamicInt8Linear(nn.Module):
    """The export form of an 8-bit layer: one `DynamicQuantizeMatMul` node of ONNX Runtime, its weights
    int8, or uint8 shifted by a zero point of 128 where the int8 kernel saturates (`signed_weights`)."""

    def __init__(self, layer: QuantLinear, signed_weights: bool | None = None):
        super().__init__()
        integers, scale = weight_grid(layer.weight.detach().float(), layer.bits)  # the fake quantizer's grid
        self.signed_weights = not int8_kernel_saturates() if signed_weights is None else signed_weights
        if self.signed_weights:
            self.register_buffer("qweight", integers.to(torch.int8).t().contiguous())  # (in, out): MatMul's layout
            self.register_buffer("zero_point", None)
        else:
            self.register_buffer("qweight", (integers + 128).to(torch.uint8).t().contiguous())
            self.register_buffer("zero_point", torch.full((layer.out_features,), 128, dtype=torch.uint8))
        self.register_buffer("scale", scale.squeeze(1))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float())
        self.out_features = layer.out_features

    def integers(self) -> Tensor:
        """The weight's integers, (in, out), whichever way they are stored."""
        return self.qweight.to(torch.int32) - (0 if self.zero_point is None else self.zero_point.to(torch.int32))

    def forward(self, x: Tensor) -> Tensor:
        inputs = [x, self.qweight, self.scale, self.zero_point, self.bias]
        return torch.onnx.ops.symbolic("com.microsoft::DynamicQuantizeMatMul", inputs, {}, dtype=torch.float32,
                                       shape=[*x.shape[:-1], self.out_features], version=1)


class NBitsLinear(nn.Module):
    """The export form of a 4- or 2-bit layer: one `MatMulNBits` node, its weights packed block-wise on
    the fake quantizer's grid (the same integers and scales)."""

    def __init__(self, layer: QuantLinear):
        super().__init__()
        integers, scale = block_grid(layer.weight.detach().float(), layer.bits, layer.block_size)
        codes = (integers + 2 ** (layer.bits - 1)).to(torch.uint8)  # the kernel's default zero point: the middle code
        per_byte = 8 // layer.bits
        codes = codes.reshape(*codes.shape[:2], layer.block_size // per_byte, per_byte)
        packed = torch.zeros(codes.shape[:-1], dtype=torch.uint8)
        for j in range(per_byte):  # low bits first, along the inputs
            packed |= codes[..., j] << (layer.bits * j)
        self.register_buffer("packed", packed.contiguous())  # (out, blocks, block bytes)
        self.register_buffer("scale", scale.reshape(layer.out_features, -1).contiguous())  # (out, blocks)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float())
        self.bits, self.block_size = layer.bits, layer.block_size
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        # K and N are the graph's widths: `chain` sets them from each build's weights
        attributes = {"K": self.in_features, "N": self.out_features, "bits": self.bits,
                      "block_size": self.block_size, "accuracy_level": NBITS_ACCURACY_LEVEL}
        inputs = [x, self.packed, self.scale, None, None, self.bias]
        return torch.onnx.ops.symbolic("com.microsoft::MatMulNBits", inputs, attributes, dtype=torch.float32,
                                       shape=[*x.shape[:-1], self.out_features], version=1)


class Int8Table(nn.Module):
    """The export form of a quantized table: int8 codes and one scale per row, dequantized on lookup."""

    def __init__(self, table: QuantTable):
        super().__init__()
        integers, scale = weight_grid(table.weight.detach().float(), table.bits)  # per row, as the fake quantizer
        self.register_buffer("codes", integers.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.contiguous())  # (rows, 1)
        self.bits = table.bits

    def forward(self, ids: Tensor | None = None) -> Tensor:
        if ids is None:
            return self.codes.float() * self.scale
        flat = ids.reshape(-1)  # index_select: one Gather of the int8 rows (indexing exports as GatherND)
        rows = torch.index_select(self.codes, 0, flat).float() * torch.index_select(self.scale, 0, flat)
        return rows.reshape(*ids.shape, -1)


def _lower(module: nn.Module) -> nn.Module:
    if isinstance(module, QuantTable):
        return Int8Table(module)
    return DynamicInt8Linear(module) if module.bits >= BYTE_BITS else NBitsLinear(module)


def onnx_lowered(part: nn.Module) -> nn.Module:
    """A copy of `part` whose quantized layers and tables are ONNX Runtime's kernels."""
    return with_quantized_layers_as(part, _lower, tables=True)
