"""AOTInductor: `torch.export` compiled ahead of time into a `.pt2` package, for
users who deploy PyTorch-native and for CUDA targets.

An 8-bit layer becomes an int8 x int8 -> int32 matrix product (`torch._int_mm`)
on the fake quantizer's integers: activations quantized per tensor at run time
to uint8 with a zero point, as simulated in training, shifted to int8 for the
kernel, with the shift's correction added to the int32 sums. Compiling takes
10-30 s per model on a small CPU, so a latency dataset of hundreds of archs
costs hours on this runtime.

On CUDA the artifact is compiled for the GPU from a copy of the subnet moved
there. cuBLAS's int8 product takes more than 16 rows and inner and outer sizes
that are multiples of 8, with the weight column-major: the weight is stored
(out, in) and read transposed, its sizes padded with zero rows and columns, and
every batch gets 16 zero rows more (a batch of one image of 16 tokens is 16
rows); what the padding adds is sliced away.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from predictors.runtimes.base import Program, Runtime, register, with_quantized_layers_as
from supernet.quant import QuantLinear, weight_grid

# cuBLAS's int8 matrix product (torch._int_mm on CUDA) refuses 16 rows or fewer, and sizes that are not
# multiples of 8
_CUDA_MIN_ROWS = 16
_CUDA_MULTIPLE = 8


class Int8MatMulLinear(nn.Module):
    """The torch-native form of an 8-bit layer: real int8 matrix products."""

    def __init__(self, layer: QuantLinear, cublas_layout: bool | None = None):
        """`cublas_layout`: the CUDA kernel's layout and padding (default: where the layer lives on CUDA)."""
        super().__init__()
        integers, scale = weight_grid(layer.weight.detach().float(), layer.bits)  # the fake quantizer's grid
        integers, scale = integers.to(torch.int8), scale.squeeze(1)
        self.out_features, self.in_features = integers.shape
        self.for_cuda = integers.is_cuda if cublas_layout is None else cublas_layout
        if self.for_cuda:  # (out, in) read transposed: column-major for cuBLAS, sizes multiples of 8
            integers = F.pad(integers, (0, -self.in_features % _CUDA_MULTIPLE, 0, -self.out_features % _CUDA_MULTIPLE))
            self.register_buffer("qweight", integers.contiguous())
        else:
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
        if self.for_cuda:
            padded = F.pad(shifted, (0, self.qweight.shape[1] - self.in_features, 0, _CUDA_MIN_ROWS))
            products = torch._int_mm(padded, self.qweight.t())[:flat.shape[0], :self.out_features]
        else:
            products = torch._int_mm(shifted, self.qweight)
        sums = products + (128 - zero_point).to(torch.int32) * self.column_sums[:self.out_features]
        out = sums.float() * (step * self.scale)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], -1)


def torch_lowered(subnet: nn.Module) -> nn.Module:
    """A copy of `subnet` whose quantized layers run real int8 matrix products (its quantized embedding
    tables stay as they are: fake-quantized in fp32)."""
    low = sorted({m.bits for m in subnet.modules() if isinstance(m, QuantLinear) and m.bits < 8})
    if low:
        AOTInductor().require_bits(tuple(low))
    return with_quantized_layers_as(subnet, Int8MatMulLinear)


class CompiledProgram(Program):
    """A compiled package, run on the device it was compiled for: a batch from elsewhere is moved
    there and its logits back (as a user's call would); `runner` times the program on the device."""

    def __init__(self, runner, directory: tempfile.TemporaryDirectory, device: str):
        self._runner = runner
        self._directory = directory  # the package's file lives as long as the program
        self.device = torch.device(device)

    def __call__(self, inputs: Tensor) -> Tensor:
        return self._runner(inputs.to(self.device)).to(inputs.device)

    def runner(self, inputs: Tensor):
        inputs = inputs.to(self.device)
        return lambda: self._runner(inputs)


@register
class AOTInductor(Runtime):
    name = "aotinductor"
    artifact = "model.aoti.pt2"
    package = "torch"
    module = "torch._inductor"
    devices = ("cpu", "cuda")

    def fingerprint(self, device: str, threads: int) -> dict:
        return {**super().fingerprint(device, threads), "compiler": "inductor"}

    def build(self, subnet: nn.Module, example: Tensor, device: str = "cpu") -> bytes:
        if device != "cpu":  # compiled for the device's kernels, from a copy that lives there
            subnet = copy.deepcopy(subnet).to(device)
        lowered = torch_lowered(subnet)
        pair = torch.cat([example[:1], example[:1]]).to(device)  # batch 1 would be specialized away
        batch = torch.export.Dim("batch", min=1)
        with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            program = torch.export.export(lowered, (pair,), dynamic_shapes=({0: batch},))
            path = Path(directory) / "model.pt2"
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
            return path.read_bytes()

    def load(self, artifact: bytes, device: str, threads: int) -> CompiledProgram:
        directory = tempfile.TemporaryDirectory(prefix="elastiq-aoti-")
        path = Path(directory.name) / "model.pt2"
        path.write_bytes(artifact)
        return CompiledProgram(torch._inductor.aoti_load_package(str(path)), directory, device)
