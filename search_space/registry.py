"""Names the search space accepts for attention types and bit widths.

The kernels themselves live in `supernet` (torch); the space only needs the
names, so it stays importable without torch. A new kernel registers its name
here from `supernet.attention`.
"""

ATTENTION_TYPES: set[str] = {"softmax", "linear", "local"}

# 32 means full precision (quantization off). Below 8 bits, weights are quantized in blocks of
# `quant_block_size` inputs, a power of two of at least 16 (ONNX Runtime's MatMulNBits).
SUPPORTED_BITS: tuple[int, ...] = (32, 8, 4, 2)
DEFAULT_QUANT_BLOCK_SIZE = 32
MIN_QUANT_BLOCK_SIZE = 16


def register_attention_type(name: str) -> None:
    if not name or not name.isidentifier():
        raise ValueError(f"attention type name must be an identifier, got {name!r}")
    ATTENTION_TYPES.add(name)
