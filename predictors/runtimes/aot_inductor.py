"""AOTInductor: `torch.export` compiled ahead of time into a `.pt2` package, for
users who deploy PyTorch-native and for CUDA targets.

An 8-bit layer becomes an int8 x int8 -> int32 matrix product (`torch._int_mm`)
on the fake quantizer's integers: activations quantized per tensor at run time
to uint8 with a zero point, as simulated in training, shifted to int8 for the
kernel, with the shift's correction added to the int32 sums. Compiling takes
10-30 s per model on a small CPU, so a latency dataset of hundreds of archs
costs hours on this runtime.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from predictors.runtimes.base import Program, Runtime, register, with_quantized_layers_as
from supernet.quant import QuantLinear, weight_grid


class Int8MatMulLinear(nn.Module):
    """The torch-native form of an 8-bit layer: real int8 matrix products."""

    def __init__(self, layer: QuantLinear):
        super().__init__()
        integers, scale = weight_grid(layer.weight.detach().float(), layer.bits)  # the fake quantizer's grid
        integers, scale = integers.to(torch.int8), scale.squeeze(1)
        self.register_buffer("qweight", integers.t().contiguous())  # (in, out)
        self.register_buffer("column_sums", integers.to(torch.int32).sum(dim=1))  # for the int8 shift
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        low, high = flat.amin().clamp(max=0.0), flat.amax().clamp(min=0.0)  # as supernet.quant, 8 bits
        step = ((high - low) / 255).clamp_min(1e-8)
        zero_point = torch.round(-low / step)
        shifted = (torch.clamp(torch.round(flat / step) + zero_point, 0, 255) - 128).to(torch.int8)
        sums = torch._int_mm(shifted, self.qweight) + (128 - zero_point).to(torch.int32) * self.column_sums
        out = sums.float() * (step * self.scale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], -1)


def torch_form(subnet: nn.Module) -> nn.Module:
    """A copy of `subnet` whose quantized layers run real int8 matrix products."""
    return with_quantized_layers_as(subnet, Int8MatMulLinear)


class CompiledProgram(Program):
    def __init__(self, runner, directory: tempfile.TemporaryDirectory):
        self._runner = runner
        self._directory = directory  # the package's file lives as long as the program

    def __call__(self, inputs: Tensor) -> Tensor:
        return self._runner(inputs)


@register
class AOTInductor(Runtime):
    name = "aotinductor"
    artifact = "model.aoti.pt2"
    package = "torch"
    module = "torch._inductor"
    devices = ("cpu", "cuda")

    def fingerprint(self, device: str, threads: int) -> dict:
        return {**super().fingerprint(device, threads), "compiler": "inductor"}

    def build(self, subnet: nn.Module, example: Tensor) -> bytes:
        form = torch_form(subnet)
        pair = torch.cat([example[:1], example[:1]])  # batch 1 would be specialized away
        batch = torch.export.Dim("batch", min=1)
        with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            program = torch.export.export(form, (pair.to(_device(subnet)),), dynamic_shapes=({0: batch},))
            path = Path(directory) / "model.pt2"
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
            return path.read_bytes()

    def load(self, artifact: bytes, device: str, threads: int) -> CompiledProgram:
        directory = tempfile.TemporaryDirectory(prefix="elastiq-aoti-")
        path = Path(directory.name) / "model.pt2"
        path.write_bytes(artifact)
        return CompiledProgram(torch._inductor.aoti_load_package(str(path)), directory)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
