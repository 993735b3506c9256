"""Names the search space accepts for attention types and bit widths.

The kernels themselves live in `supernet` (torch); the space only needs the
names, so it stays importable without torch. A new kernel registers its name
here from `supernet.attention`.
"""

import re

ATTENTION_TYPES: set[str] = {"softmax", "linear", "local", "fourier"}

# `conv<k>`: a depthwise convolution over the tokens with a kernel of k tokens (odd: centred on its
# token); every kernel size of a layer shares one weight, the smaller ones its centre
CONV_PREFIX = "conv"
_CONV_NAME = re.compile(r"conv(\d+)")

# 32 means full precision (quantization off). Below 8 bits, weights are quantized in blocks of
# `quant_block_size` inputs, a power of two of at least 16 (ONNX Runtime's MatMulNBits).
SUPPORTED_BITS: tuple[int, ...] = (32, 8, 4, 2)
DEFAULT_QUANT_BLOCK_SIZE = 32
MIN_QUANT_BLOCK_SIZE = 16


def conv_kernel_size(name: str) -> int | None:
    """The kernel size of a `conv<k>` mixer's name; None for any other name."""
    match = _CONV_NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def is_attention_type(name: str) -> bool:
    return name in ATTENTION_TYPES or conv_kernel_size(name) is not None


def mixer_kind(name: str) -> str:
    """The family of a mixer's name: "conv" for every `conv<k>`, else the name itself."""
    return CONV_PREFIX if conv_kernel_size(name) is not None else name


def register_attention_type(name: str) -> None:
    if not name or not name.isidentifier():
        raise ValueError(f"attention type name must be an identifier, got {name!r}")
    ATTENTION_TYPES.add(name)
