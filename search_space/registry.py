"""The names the search space accepts for token mixers and bit widths.

A mixer is defined once, in `supernet.mixers` (torch): its names and their checks, whether it has heads,
its elastic and static modules, its cost. The space needs only the name-level part of each definition,
so that it stays importable without torch: every definition registers itself here when `supernet.mixers`
is imported, and the space asks these definitions, never a list of kinds of its own.
"""

from __future__ import annotations

from typing import Protocol


class MixerName(Protocol):
    """What the space needs of a mixer's definition."""

    kind: str  # its family: "softmax", "conv", ...
    grammar: str  # how its names are written, for messages: "softmax", "conv<k> (...)"
    has_heads: bool  # False: the layer's num_heads changes nothing, and an arch writes the smallest

    def matches(self, name: str) -> bool:
        """Whether `name` names this mixer (well formed or not)."""

    def check(self, name: str) -> str | None:
        """Why a name that `matches` cannot be used, or None."""


MIXERS: dict[str, MixerName] = {}  # kind -> definition, in the order they registered

# 32 means full precision (quantization off). Below 8 bits, weights are quantized in blocks of
# `quant_block_size` inputs, a power of two of at least 16 (ONNX Runtime's MatMulNBits).
SUPPORTED_BITS: tuple[int, ...] = (32, 8, 4, 2)
DEFAULT_QUANT_BLOCK_SIZE = 32
MIN_QUANT_BLOCK_SIZE = 16


def register_mixer(definition: MixerName) -> MixerName:
    if not definition.kind or not definition.kind.isidentifier():
        raise ValueError(f"a mixer's kind must be an identifier, got {definition.kind!r}")
    MIXERS[definition.kind] = definition
    return definition


def mixer_name(name: str) -> MixerName | None:
    """The definition `name` belongs to; None for a name no mixer knows."""
    if not isinstance(name, str):
        return None
    return next((d for d in MIXERS.values() if d.matches(name)), None)


def has_heads(name: str) -> bool:
    """Whether a layer of mixer `name` has heads (a name no mixer knows is refused elsewhere: True)."""
    definition = mixer_name(name)
    return definition is None or definition.has_heads


def known_mixers() -> str:
    """Every mixer's names as a message lists them."""
    return ", ".join(d.grammar for d in MIXERS.values()) or "none (import supernet.mixers to register them)"
