"""A token mixer's definition: everything one choice of a layer's `mixer` gene is, in one class.

A definition says which names are its own and how they are checked (`search_space.registry` asks it),
what the elastic layer computes with it (`forward`, and `mix` for the multi-arch pass), which static
module `extract` makes of it, and what it costs (`projections`, `macs`, `params`, `weight_bytes`). The
elastic layer (`supernet.model.ElasticMixer`) holds the shared Q/K/V/O projections and whatever extra
weights the definitions offered in the space ask for (`weight_shapes`); it branches on no kind. A new mixer is
one module of this package, imported by its `__init__`.

What a runtime needs of a static module is declared by the module (`graph_settings`, see
`supernet.subnet.graph_settings`), not kept by the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from search_space.registry import MIXERS, mixer_name, register_mixer

# projection name -> (input, output) in units of (the layer's width, heads x head_dim, key-value heads x head_dim)
PROJECTIONS = {"query": ("width", "inner"), "key": ("width", "kv"), "value": ("width", "kv"),
               "out": ("inner", "width")}


@dataclass(frozen=True)
class MixerShape:
    """One layer's token mixing as its cost sees it (per sample)."""

    tokens: int  # the layer's tokens (after its stage's reductions)
    inner: int  # heads x head_dim
    head_dim: int
    width: int  # the layer's hidden size
    local_window: int  # the space's: tokens each side a `local` query sees
    fixed_tokens: int | None = None  # the layer's tokens where inputs carry no padding (a static layer may hold them)


class Mixer:
    """The interface, with the defaults of a mixer that reads the shared projections and writes through
    the output projection (`projected`)."""

    kind: str = ""
    grammar: str = ""  # how its names are written, for messages
    has_heads: bool = True  # False: num_heads changes nothing (an arch writes the smallest choice)
    projected: bool = True  # its output goes through the shared `out` projection (multi-arch pads it)
    projections: tuple[str, ...] = ("query", "key", "value", "out")  # the shared projections it uses
    sublayer: bool = True  # False: the layer keeps its MLP alone (no norm, no residual branch before it)
    causal: bool = False  # no token sees a later one: a decoder LM's layers may take it

    # ---- names (what the space asks) ----------------------------------
    def matches(self, name: str) -> bool:
        return name == self.kind

    def check(self, name: str) -> str | None:
        return None

    def check_task(self, name: str, tokens: int) -> str | None:
        """Why a task of `tokens` tokens cannot run this mixer, or None."""
        return None

    # ---- the elastic layer ---------------------------------------------
    def weight_shapes(self, names: tuple[str, ...], inner: int) -> dict[str, tuple[int, ...]]:
        """Extra elastic weights for the layer's offered `names` of this mixer, by name (`init_weights` draws them)."""
        return {}

    def init_weights(self, layer: nn.Module, generator: torch.Generator) -> None:
        pass

    def forward(self, layer: nn.Module, x: Tensor, name: str, num_heads: int, bits: int,
                mask: Tensor | None) -> Tensor:
        mixed = self.mix(layer, lambda projection: getattr(layer, projection)(
            x, layer.projection_size(projection, num_heads), bits), name, num_heads, mask)
        return layer.out(mixed, x.shape[-1], bits)

    def mix(self, layer: nn.Module, project: Callable[[str], Tensor], name: str, num_heads: int,
            mask: Tensor | None) -> Tensor:
        """The mixed (batch, tokens, heads x head_dim) values before the output projection, from
        `project(name)`, the output of the shared projection `name` (the multi-arch pass gives padded ones)."""
        raise NotImplementedError

    def extract(self, layer: nn.Module, width: int, name: str, num_heads: int, bits: int,
                tokens: int | None) -> nn.Module | None:
        """The static sublayer at `width` (None: no sublayer); `tokens`: inputs' length where unpadded."""
        raise NotImplementedError

    # ---- cost ------------------------------------------------------------
    def macs(self, name: str, shape: MixerShape) -> int:
        """Multiply-accumulates of the mixing itself (its projections are counted as Linear layers)."""
        raise NotImplementedError

    def params(self, name: str, shape: MixerShape) -> int:
        """Weights of the mixing itself, beyond the projections."""
        return 0

    def weight_bytes(self, name: str, shape: MixerShape) -> int:
        """What the mixing itself stores in the artifact (fp32 weights, fixed matrices)."""
        return 4 * self.params(name, shape)


def register(definition: type[Mixer]) -> type[Mixer]:
    register_mixer(definition())
    return definition


def mixer_of(name: str) -> Mixer:
    definition = mixer_name(name)
    if definition is None:
        raise KeyError(f"no mixer is named {name!r}")
    return definition


def offered(names: tuple[str, ...]) -> dict[Mixer, tuple[str, ...]]:
    """The definitions of `names`, each with its own names among them, in the registry's order."""
    return {d: tuple(n for n in names if d.matches(n)) for d in MIXERS.values() if any(map(d.matches, names))}


def projection_shapes(definition: Mixer, width: int, inner: int, kv: int | None = None) -> list[tuple[int, int]]:
    """(inputs, outputs) of each shared projection the mixer uses; `kv`: the keys' and values' width where
    fewer heads than the queries' (grouped-query attention)."""
    size = {"width": width, "inner": inner, "kv": inner if kv is None else kv}
    return [(size[PROJECTIONS[p][0]], size[PROJECTIONS[p][1]]) for p in definition.projections]


__all__ = ["Mixer", "MixerShape", "mixer_of", "offered", "projection_shapes", "register"]
