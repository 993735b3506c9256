"""`none`: a layer that keeps its MLP and mixes no tokens (Puzzle's no-op attention, searched per block).

No projection, no weight, no norm before it in a pre-LN block (a post-LN block keeps the norm of its
residual stream); the static layer has no mixing sublayer at all, so its artifact computes nothing for it.
"""

from __future__ import annotations

import torch

from supernet.mixers.base import Mixer, MixerShape, register


@register
class NoMixer(Mixer):
    kind = grammar = "none"
    has_heads = False
    projected = False
    projections = ()
    sublayer = False
    causal = True

    def forward(self, layer, x, name, num_heads, bits, mask):
        return torch.zeros_like(x)  # what it adds to the residual stream (a multi-arch pass pads with it)

    def extract(self, layer, width, name, num_heads, bits, tokens):
        return None

    def macs(self, name: str, shape: MixerShape) -> int:
        return 0
