"""`conv<k>`: a depthwise convolution over the tokens (FlexiBERT), a mixer without query and key.

It mixes the layer's value projection with a depthwise kernel of k tokens per channel (centred, zero
beyond the sequence), then its output projection. Every kernel size of a layer shares one weight: a
k-token kernel is the centre of the largest (Once-for-All's kernel sharing). Padded tokens are zeroed
before it, so that they add nothing. The same functions serve the supernet and the extracted model.
"""

from __future__ import annotations

import re

import torch.nn.functional as F
from torch import Tensor, nn

from supernet.mixers.base import Mixer, MixerShape, register

_NAME = re.compile(r"conv(\d+)")


def kernel_size(name: str) -> int | None:
    """The kernel size of a `conv<k>` name; None for any other name."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def centre(weight: Tensor, channels: int, size: int) -> Tensor:
    """The (channels, size) centre of a (max channels, max kernel) depthwise kernel."""
    start = (weight.shape[1] - size) // 2
    return weight[:channels, start:start + size]


def token_conv(v: Tensor, weight: Tensor, mask: Tensor | None) -> Tensor:
    """Depthwise convolution of v (batch, tokens, channels) over the tokens with weight (channels, k)."""
    if mask is not None:  # a padded token adds nothing to its neighbours
        v = v * mask[..., None].to(v.dtype)
    channels, size = weight.shape
    out = F.conv1d(v.transpose(1, 2), weight[:, None, :], padding=size // 2, groups=channels)
    return out.transpose(1, 2)


class ConvMixer(nn.Module):
    """The static `conv<k>` sublayer: value projection, depthwise convolution over the tokens, output."""

    graph_settings = ("channels", "kernel_size")  # the graph's Conv holds both (its group and its kernel)

    def __init__(self, value: nn.Linear, weight: Tensor, out: nn.Linear):
        super().__init__()
        self.value, self.out = value, out
        self.weight = nn.Parameter(weight.detach().clone())
        self.channels, self.kernel_size = weight.shape

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.out(token_conv(self.value(x), self.weight, mask))


@register
class Conv(Mixer):
    kind = "conv"
    grammar = "conv<k> (a depthwise convolution of odd kernel size k: conv3, conv5, ...)"
    projections = ("value", "out")

    def matches(self, name: str) -> bool:
        return kernel_size(name) is not None

    def check(self, name: str) -> str | None:
        size = kernel_size(name)
        if name != f"conv{size}" or size < 1:
            return f"{name!r} does not name a kernel size; write conv3, conv5, ..."
        if size % 2 == 0:
            return (f"{name} has an even kernel size {size}; a kernel centred on its token needs an odd size "
                    f"({size - 1} or {size + 1})")
        return None

    def check_task(self, name: str, tokens: int) -> str | None:
        if kernel_size(name) > tokens:
            return f"{name} has a kernel of {kernel_size(name)} tokens, longer than the task's sequence of {tokens}"
        return None

    def weight_shapes(self, names, inner):
        # one weight for every size, `conv_weight` (the name checkpoints hold)
        return {"conv_weight": (inner, max(map(kernel_size, names)))}

    def init_weights(self, layer, generator):
        bound = layer.conv_weight.shape[1] ** -0.5  # a depthwise kernel's fan-in: its taps
        nn.init.uniform_(layer.conv_weight, -bound, bound, generator=generator)

    def mix(self, layer, project, name, num_heads, mask):
        channels = num_heads * layer.head_dim
        return token_conv(project("value"), centre(layer.conv_weight, channels, kernel_size(name)), mask)

    def extract(self, layer, width, name, num_heads, bits, tokens):
        inner = num_heads * layer.head_dim
        return ConvMixer(layer.value.get_active_subnet(width, inner, bits),
                         centre(layer.conv_weight, inner, kernel_size(name)),
                         layer.out.get_active_subnet(inner, width, bits))

    def macs(self, name: str, shape: MixerShape) -> int:
        return shape.tokens * shape.inner * kernel_size(name)  # k taps per token and channel

    def params(self, name: str, shape: MixerShape) -> int:
        return shape.inner * kernel_size(name)
