"""Several archs in one forward pass (ViT-ResNAS's multi-architectural sampling).

The batch is split into equal parts, part i computed by `archs[i]`, all in one
pass at the widest of their dims: each sample carries masks of its arch's
embedding channels, heads and MLP neurons, and its depth. A masked channel is
zero wherever it enters a weight, so the padded product equals the sliced one;
LayerNorms take their statistics over a sample's own channels. What cannot be
padded is split: the mixers by name (each definition's `mix` on the padded
projections), a mixer without the output projection (`fourier`) by part (its DFT
spans a part's own width), and quantized layers by part (their activation range
is each part's own, as in the arch's own forward).
A space with layer widths or stages is not run here (`train.sandwich_loss` passes
each arch alone): joins and merged tokens are not padded.
The result equals running each arch on its part (to float rounding), with
fewer and larger kernel launches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from search_space import Arch
from supernet.elastic_layers import ElasticLayerNorm, ElasticLinear
from supernet.mixers import mixer_of
from supernet.model import Supernet
from supernet.quant import FULL_PRECISION
from supernet.subnet import ACTIVATIONS, padding_mask, pool_tokens, residual


def _sample_values(values: list[int], part: int, device) -> Tensor:
    """One value per arch -> one per sample (parts of `part` samples each)."""
    return torch.tensor(values, device=device).repeat_interleave(part)


def _channel_mask(widths: Tensor, width: int, dtype) -> Tensor:
    """(batch, 1, width): 1 on a sample's first `widths[b]` channels."""
    return (torch.arange(width, device=widths.device)[None, :] < widths[:, None]).to(dtype)[:, None, :]


def _masked_norm(norm: ElasticLayerNorm, x: Tensor, mask: Tensor, widths: Tensor) -> Tensor:
    """LayerNorm of each sample over its own first `widths[b]` channels (the others stay zero)."""
    width = x.shape[-1]
    count = widths.to(x.dtype)[:, None, None]
    mean = (x * mask).sum(-1, keepdim=True) / count
    centred = (x - mean) * mask
    variance = (centred * centred).sum(-1, keepdim=True) / count
    return (centred * torch.rsqrt(variance + norm.eps) * norm.weight[:width] + norm.bias[:width]) * mask


class _Pass:
    """The per-sample layout of one pass: its parts, and where quantized layers must split."""

    def __init__(self, archs: list[Arch], batch: int, device):
        if batch % len(archs):
            raise ValueError(f"a batch of {batch} does not split into {len(archs)} equal parts")
        self.archs, self.part = archs, batch // len(archs)
        self.device = device

    def linear(self, layer: ElasticLinear, x: Tensor, out_features: int, bits: list[int], ins: list[int],
               outs: list[int]) -> Tensor:
        """The padded product; the parts at full precision in one call, each quantized part alone at
        its own `ins[i]` x `outs[i]` slice (a weight's quantization scale is its sliced row's)."""
        if all(b >= FULL_PRECISION for b in bits):
            return layer(x, out_features)
        out = x.new_zeros(*x.shape[:-1], out_features)
        full = [i for i, b in enumerate(bits) if b >= FULL_PRECISION]
        if full:
            rows = self.rows(full)
            out[rows] = layer(x[rows], out_features)
        for i, b in enumerate(bits):
            if b < FULL_PRECISION:
                rows = self.rows([i])
                out[rows, ..., :outs[i]] = layer(x[rows][..., :ins[i]], outs[i], b)
        return out

    def rows(self, parts: list[int]) -> Tensor:
        return torch.cat([torch.arange(i * self.part, (i + 1) * self.part, device=self.device) for i in parts])


def forward_parts(model: Supernet, x: Tensor, archs: list[Arch]) -> Tensor:
    """Logits of `x`, its i-th equal part computed by `archs[i]`, in one pass."""
    if not model.space.padded_multi_arch:  # joins between widths, merged tokens: train.sandwich_loss passes each alone
        raise ValueError(f"archs of a space with {', '.join(g.key for g in model.space.genes)} choices run one pass "
                         f"each, not in one multi-arch pass")
    if model.task.style.causal:  # its blocks run in their model's order, its keys and values in head groups
        raise ValueError("a decoder's archs run one pass each, not in one multi-arch pass")
    device, task = x.device, model.task
    run = _Pass(archs, x.shape[0], device)
    mask = padding_mask(x, task.input_kind, task.style)
    width = max(a.embed_dim for a in archs)
    widths = _sample_values([a.embed_dim for a in archs], run.part, device)

    stem = model.stem
    h = None
    for embed_dim in dict.fromkeys(a.embed_dim for a in archs):  # each width's own (its tables' scales are its own)
        rows = run.rows([i for i, a in enumerate(archs) if a.embed_dim == embed_dim])
        vectors = stem(x[rows], embed_dim, norm=False)
        if h is None:
            h = vectors.new_zeros(x.shape[0], vectors.shape[1], width)
        h[rows, :, :embed_dim] = vectors
    channels = _channel_mask(widths, width, h.dtype)
    h = _masked_norm(stem.norm, h, channels, widths) if stem.norm is not None else h * channels

    for index, block in enumerate(model.blocks):
        layers = [a.layers[index] if index < len(a.layers) else None for a in archs]
        present = [layer for layer in layers if layer is not None]
        if not present:
            break
        h = _block(run, block, h, layers, present, [a.embed_dim for a in archs], channels, widths, mask)

    logits = None
    heads = [model.head_of(a.depth) for a in archs]
    for head in {id(head): head for head in heads}.values():  # with a head per depth, each part reads its own
        norm = None if head.norm is None else (lambda t, head=head: _masked_norm(head.norm, t, channels, widths))
        pooler = None if head.pooler is None else (lambda t, head=head: head.pooler(t, width) * channels[:, 0])
        out = head.classifier(pool_tokens(h, mask, head.style, norm, pooler))
        reads = _sample_values([int(other is head) for other in heads], run.part, device).bool()[:, None]
        logits = out if logits is None else torch.where(reads, out, logits)
    return logits


def _block(run: _Pass, block, h: Tensor, layers: list, present: list, embeds: list[int], channels: Tensor,
           widths: Tensor, mask: Tensor | None) -> Tensor:
    """One block over the parts: the parts whose arch is shallower than it pass through unchanged."""
    device, head_dim = h.device, block.attention.head_dim
    active = _sample_values([layer is not None for layer in layers], run.part, device)[:, None, None]
    layers = [layer if layer is not None else present[0] for layer in layers]  # computed, then discarded
    bits = [layer.bits for layer in layers]
    inners = [layer.num_heads * head_dim for layer in layers]
    hiddens = [layer.mlp_dim for layer in layers]
    inner, hidden, width = max(inners), max(hiddens), h.shape[-1]
    heads = _channel_mask(_sample_values(inners, run.part, device), inner, h.dtype)
    neurons = _channel_mask(_sample_values(hiddens, run.part, device), hidden, h.dtype)
    attention, mlp = block.attention, block.mlp

    def mix(t: Tensor) -> Tensor:
        q, k, v = (run.linear(proj, t, inner, bits, embeds, inners)
                   for proj in (attention.query, attention.key, attention.value))
        padded = {"query": q, "key": k, "value": v}
        mixed = torch.zeros_like(q)
        for name in dict.fromkeys(layer.mixer for layer in layers):
            definition = mixer_of(name)
            if definition.projected:  # a depthwise conv's channels beyond a part's own stay apart, as heads do
                rows = run.rows([i for i, layer in enumerate(layers) if layer.mixer == name])
                mixed[rows] = definition.mix(attention, lambda p, rows=rows: padded[p][rows], name, inner // head_dim,
                                             None if mask is None else mask[rows])
        out = run.linear(attention.out, mixed * heads, width, bits, inners, embeds) * channels
        own = [i for i, layer in enumerate(layers) if not mixer_of(layer.mixer).projected]
        if not own:
            return out
        own_out = torch.zeros_like(out)  # each part's own, at its own width (zero: a layer without a mixer)
        for i in own:
            rows, definition = run.rows([i]), mixer_of(layers[i].mixer)
            if definition.sublayer:
                own_out[rows, :, :embeds[i]] = attention(t[rows][..., :embeds[i]], 1, layers[i].mixer,
                                                         FULL_PRECISION, None if mask is None else mask[rows])
        is_own = _sample_values([int(i in own) for i in range(len(layers))], run.part, t.device)
        return torch.where(is_own.bool()[:, None, None], own_out, out)

    def feed_forward(t: Tensor) -> Tensor:
        hidden_out = ACTIVATIONS[mlp.activation](run.linear(mlp.fc1, t, hidden, bits, embeds, hiddens)) * neurons
        return run.linear(mlp.fc2, hidden_out, width, bits, hiddens, embeds) * channels

    out = residual(h, mix, feed_forward, lambda t: _masked_norm(block.norm1, t, channels, widths),
                   lambda t: _masked_norm(block.norm2, t, channels, widths), block.norm_first)
    return torch.where(active, out, h)
