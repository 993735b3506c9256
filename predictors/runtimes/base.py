"""The interface every runtime implements, and the registry of runtimes.

A runtime is what executes a deployed model on a hardware target (DESIGN
decision 7): it builds its artifact from an extracted subnet, with real
integer kernels where the layer policy quantizes (the bit widths it has
kernels for are its `supported_bits`), holding the trained quantization
numerics (`supernet.quant`: the fake quantizer's weight grid and scales, the
activations as the kernel quantizes them); it loads an artifact into a
`Program` that runs it; and it says what a latency figure taken on it is only
valid for (its fingerprint, and `measured_on`, stored with every measurement, so
that measurements of different runtimes or versions are never mixed).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from search_space import InputError, RunFailed
from supernet.quant import FULL_PRECISION, QuantLinear, QuantTable


class RuntimeUnavailable(InputError):
    """A runtime that is unknown, not installed, or cannot run on the target's device."""


class ArtifactMismatch(RunFailed):
    """A built artifact that does not compute what the subnet it was built from computes."""


class Program(ABC):
    """A loaded artifact: called on a batch as the model it was built from is."""

    @abstractmethod
    def __call__(self, inputs: Tensor) -> Tensor: ...

    def runner(self, inputs: Tensor) -> Callable[[], Any]:
        """One run on `inputs`, as timed: without the conversions a deployment would not make."""
        return lambda: self(inputs)


class Runtime(ABC):
    name: ClassVar[str]
    artifact: ClassVar[str]  # the file name export writes the artifact under
    package: ClassVar[str]  # the Python distribution the runtime needs
    devices: ClassVar[tuple[str, ...]]
    supported_bits: ClassVar[tuple[int, ...]] = (32, 8)  # the layer bit widths its artifacts run

    def require(self, device: str) -> None:
        """Refuses (one line) when the runtime's package is missing or it cannot run on `device`."""
        if importlib.util.find_spec(self.module) is None:
            raise RuntimeUnavailable(f"target.runtime {self.name!r} needs the {self.package} package, "
                                     f"which is not installed: pip install {self.package}")
        if device not in self.devices:
            raise RuntimeUnavailable(f"target.runtime {self.name!r} cannot run on device {device!r} "
                                     f"(it runs on {', '.join(self.devices)})")

    module: ClassVar[str]  # the module imported to use it

    def require_bits(self, bits: tuple[int, ...]) -> None:
        """Refuses (one line) bit widths this runtime has no kernel for."""
        missing = [b for b in bits if b not in self.supported_bits]
        if missing:
            raise RuntimeUnavailable(f"target.runtime {self.name!r} cannot run {missing[0]}-bit layers (it runs "
                                     f"{', '.join(map(str, self.supported_bits))} bits); drop them from the space's "
                                     f"bits or choose another runtime")

    def version(self) -> str:
        return importlib.metadata.version(self.package)

    def fingerprint(self, device: str, threads: int) -> dict[str, Any]:
        return {"runtime": self.name, "runtime_version": self.version(), "threads": threads}

    def measured_on(self, device: str) -> str:
        """What a latency figure is measured on, stored with it: runtime, version and device."""
        return f"{self.name}-{self.version()}-{device}"

    @abstractmethod
    def build(self, subnet: nn.Module, example: Tensor, device: str = "cpu") -> bytes:
        """The artifact of `subnet` (an extracted static subnet, wherever it lives), for inputs shaped
        as `example` with any batch size, to run on `device`."""

    @abstractmethod
    def load(self, artifact: bytes, device: str, threads: int) -> Program: ...

    def deploy(self, subnet: nn.Module, example: Tensor, device: str = "cpu", threads: int = 1) -> Program:
        """The loaded artifact of `subnet`, checked to compute what `subnet` computes on `example`."""
        program = self.load(self.build(subnet, example, device), device, threads)
        check_agreement(program, subnet, example, self.name)
        return program

    def deploy_decoder(self, subnet: nn.Module, example: Tensor, context: int, device: str = "cpu",
                       threads: int = 1) -> Program:
        """A decoder LM's artifact with a KV cache, timed as one generated token at `context` (a runtime
        without one refuses)."""
        if self.name not in DECODER_ARTIFACTS:
            raise RuntimeUnavailable(f"target.runtime {self.name!r} has no artifact for a decoder LM with a KV "
                                     f"cache ({', '.join(sorted(DECODER_ARTIFACTS))} has)")
        return DECODER_ARTIFACTS[self.name](subnet, example, context, threads)


def with_quantized_layers_as(model: nn.Module, lower: Callable[[nn.Module], nn.Module],
                             tables: bool = False) -> nn.Module:
    """A copy of `model` (in eval mode) whose quantized layers (and, with `tables`, its quantized
    embedding tables; otherwise they stay fake-quantized) are replaced by `lower(module)`."""
    kinds = (QuantLinear, QuantTable) if tables else (QuantLinear,)
    lowered = copy.deepcopy(model).eval()
    for parent in list(lowered.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds) and child.bits < FULL_PRECISION:
                setattr(parent, name, lower(child))
    return lowered


def full_precision(model: nn.Module) -> nn.Module:
    """A copy of `model` whose quantized layers and embedding tables run in fp32 with the same weights (what
    a quantized artifact's size is compared with)."""
    def plain(module: nn.Module) -> nn.Module:
        if isinstance(module, QuantTable):
            module.bits = FULL_PRECISION  # a table of the copy: read as it is stored
            return module
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        linear.load_state_dict(module.state_dict())
        return linear

    return with_quantized_layers_as(model, plain, tables=True)


def check_agreement(program: Program, subnet: nn.Module, example: Tensor, name: str) -> None:
    """The artifact's logits against the subnet's. Real int8 kernels round activations as the fake
    quantizer does but accumulate exactly, so a value near a rounding boundary can land one step
    apart, and the next quantized layer carries that step on: the tolerance grows with the quantized
    layers (2% of the largest logit per six of them, one block's worth; a 6-layer encoder all int8
    differed by 1.2%, one with 12 int8 layers by 1.9%; one with logits under 0.2, by 0.03). A graph
    that computes something else (a wrong weight, a width baked in) is off by the logits' own size."""
    quantized = sum(isinstance(m, QuantLinear) and m.bits < FULL_PRECISION for m in subnet.modules())
    with torch.inference_mode():
        expected = subnet.eval()(example).float()
        got = program(example).float()
    # on the logits' scale, never below 1: a subnet whose logits are near zero (it has learned little)
    # still moves them by rounding steps of its activations' size
    tolerance = 1e-4 + (0.01 + 0.02 * quantized / 6) * max(1.0, float(expected.abs().max()))
    error = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not error <= tolerance:
        raise ArtifactMismatch(f"the {name} artifact does not compute what the subnet computes "
                               f"(max |logit difference| {error:.3g} > {tolerance:.3g})")


RUNTIMES: dict[str, type[Runtime]] = {}
# runtime name -> deploy(subnet, example, context, threads): its decoder artifact (a module of its own registers it)
DECODER_ARTIFACTS: dict[str, Callable[..., Program]] = {}
DEFAULT_RUNTIME = {"cpu": "onnxruntime", "cuda": "aotinductor"}


def register(runtime: type[Runtime]) -> type[Runtime]:
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_named(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise RuntimeUnavailable(f"target.runtime: unknown runtime {name!r} (known: {', '.join(sorted(RUNTIMES))})")
    return RUNTIMES[name]()
