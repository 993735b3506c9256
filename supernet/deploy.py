"""Lowering an extracted subnet to real low-precision kernels (DESIGN decision 7).

Layers whose policy says 8 (or 4) bits become real int8 kernels; fp32 layers
stay fp32. The int8 weights are the fake-quantized ones exactly (same
per-channel symmetric grid), so the deployed model computes what training
simulated, up to the kernel's own activation rounding. There is no int4 CPU
kernel in torch: 4-bit layers hold their 4-bit values in the int8 kernel.

The choice of kernel library sits behind `Int8Backend`; torch's dynamic
quantization is the one that works in eager mode here (torchao's successor
needs `torch.compile` to pay off).
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Protocol

import torch
from torch import nn

from supernet.quant import FULL_PRECISION, QuantLinear


class Int8Backend(Protocol):
    name: str

    def available(self) -> bool: ...

    def lower(self, layer: QuantLinear) -> nn.Module:
        """A real low-precision module computing `layer`."""
        ...


class TorchDynamicInt8:
    """torch.ao dynamic quantization: int8 weights, activations quantized at run time."""

    name = "torch-dynamic-int8"

    def available(self) -> bool:
        return "x86" in torch.backends.quantized.supported_engines or \
            "fbgemm" in torch.backends.quantized.supported_engines or \
            "qnnpack" in torch.backends.quantized.supported_engines

    def lower(self, layer: QuantLinear) -> nn.Module:
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated but is what runs here
            warnings.simplefilter("ignore")
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

            weight = layer.weight.detach().float()
            qmax = 2 ** (layer.bits - 1) - 1
            scales = (weight.abs().amax(dim=1).clamp_min(1e-8) / qmax).double()
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            qweight = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
            lowered = DynamicLinear(layer.in_features, layer.out_features, bias_=layer.bias is not None)
            lowered.set_weight_bias(qweight, None if layer.bias is None else layer.bias.detach().float())
        return lowered


BACKENDS: dict[str, Int8Backend] = {TorchDynamicInt8.name: TorchDynamicInt8()}
DEFAULT_BACKEND = TorchDynamicInt8.name


def to_deployable(subnet: nn.Module, backend: str = DEFAULT_BACKEND) -> nn.Module:
    """A copy of `subnet` (or of any module of it) whose quantized layers run real int8 kernels, in eval mode."""
    lowering = BACKENDS[backend]
    model = copy.deepcopy(subnet).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLinear) and child.bits < FULL_PRECISION:
                setattr(parent, name, lowering.lower(child))
    return model


# What a latency figure is measured on, recorded with every measurement: the TorchScript
# program that export ships, not the eager module (whose Python overhead doubles the
# latency of the small models here).
MEASURED_FORM = f"torchscript+{DEFAULT_BACKEND}"


def trace_program(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The deployable program of `model`: TorchScript traced on `example`. The trace fixes
    the sequence length (branches on it are resolved); the batch size stays free."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about those resolved branches
        return torch.jit.trace(model.eval(), example, check_trace=False)


def deployed_program(subnet: nn.Module, example: torch.Tensor,
                     backend: str = DEFAULT_BACKEND) -> torch.jit.ScriptModule:
    """The program measured and shipped for `subnet`: real low-precision kernels, traced."""
    return trace_program(to_deployable(subnet, backend), example)


def program_bytes(program: torch.jit.ScriptModule) -> int:
    """The size of `program` as `torch.jit.save` writes it."""
    buffer = io.BytesIO()
    torch.jit.save(program, buffer)
    return len(buffer.getvalue())


def quantized_layer_count(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())
