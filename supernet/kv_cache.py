"""A static decoder LM as one step of generation with a KV cache: the form a runtime deploys and a target's
decode latency is measured on.

`DecoderStep` wraps a `Subnet` of a causal style. Its inputs and outputs are named as ONNX Runtime GenAI
and Optimum name them: `input_ids` (batch, new), `attention_mask` (batch, past + new; 1 at real tokens),
`position_ids` (batch, new), and for each layer with attention `past_key_values.N.key` / `.value` (batch,
its key-value heads, past, head_dim) -> `logits` (batch, new, vocabulary) and `present.N.key` / `.value`
(the past and the new tokens'). N counts the layers of the model in the order they run; a layer without
attention (`none`) has no cache, and each layer's cache has its own number of heads (the arch's). A step
of several new tokens is a prefill; of one, a decoding step. Its blocks compute what the model's own do
(the same `residual` and MLP), with the attention's cached form (`Attention.cached`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from supernet.subnet import Subnet, residual


@dataclass(frozen=True)
class CacheLayout:
    """The shapes of a decoder's KV cache: per cached layer, its key-value heads; the head width."""

    kv_heads: tuple[int, ...]
    head_dim: int

    def names(self) -> tuple[list[str], list[str]]:
        """(past input names, present output names), keys and values alternating, layer by layer."""
        past = [f"past_key_values.{i}.{part}" for i in range(len(self.kv_heads)) for part in ("key", "value")]
        return past, [name.replace("past_key_values", "present") for name in past]

    def empty(self, batch: int, past: int) -> list[Tensor]:
        """A cache of `past` tokens (zeros), in input order."""
        return [torch.zeros(batch, heads, past, self.head_dim) for heads in self.kv_heads for _ in range(2)]


def cache_layout(subnet: Subnet) -> CacheLayout:
    attentions = [block.attention for block in subnet.blocks if block.attention is not None]
    head_dim = attentions[0].head_dim if attentions else 1
    return CacheLayout(tuple(a.layout.kv_heads(a.num_heads) for a in attentions), head_dim)


def cached_block(block: nn.Module, h: Tensor, key_mask: Tensor, positions: Tensor, past_key: Tensor,
                 past_value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A static block (with attention) on new tokens over its cache: (hidden, present key, present value)."""
    presents: list[Tensor] = []

    def attend(x: Tensor) -> Tensor:
        out, key, value = block.attention.cached(x, positions, key_mask, past_key, past_value)
        presents.extend((key, value))
        return out

    return residual(h, attend, block.mlp, block.norm1, block.norm2, block.norm_first), *presents


class DecoderStep(nn.Module):
    """`subnet` (a causal style's static model) as one step with a KV cache (see the module)."""

    def __init__(self, subnet: Subnet):
        super().__init__()
        if not subnet.stem.style.causal:
            raise ValueError("a KV cache is a decoder LM's: this model's style is not causal")
        self.subnet = subnet
        self.layout = cache_layout(subnet)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *past: Tensor
                ) -> tuple[Tensor, ...]:
        key_mask = attention_mask.bool()
        h = self.subnet.stem(input_ids, position_ids)
        presents: list[Tensor] = []
        for block in self.subnet.blocks:
            if block.attention is None:  # no mixing, no cache: the block as it runs in the model
                h = block(h)
                continue
            i = len(presents)
            h, key, value = cached_block(block, h, key_mask, position_ids, past[i], past[i + 1])
            presents += [key, value]
        return (self.subnet.head(h), *presents)


@torch.no_grad()
def greedy(step: nn.Module, layout: CacheLayout, prompt: Tensor, new_tokens: int) -> Tensor:
    """The `new_tokens` tokens (batch, new_tokens) that greedy decoding adds to `prompt` (batch, tokens; no
    padding) with `step` (a `DecoderStep`, or any callable of its inputs, such as a runtime's program)."""
    batch, tokens = prompt.shape
    mask = torch.ones(batch, tokens, dtype=torch.long)
    positions = torch.arange(tokens)[None].expand(batch, -1)
    out = step(prompt, mask, positions, *layout.empty(batch, 0))
    added = []
    for _ in range(new_tokens):
        token = out[0][:, -1].argmax(dim=-1, keepdim=True)
        added.append(token)
        mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], dim=1)
        out = step(token, mask, mask.sum(dim=1, keepdim=True) - 1, *out[1:])
    return torch.cat(added, dim=1)
