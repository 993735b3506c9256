"""Importance order of heads and MLP neurons (as DynaBERT, Minitron and DyNAS-T's BERT supernet do).

Slicing keeps the first heads and neurons of each layer, so before anything is sliced each layer's
heads and neurons are put in order of importance, measured on calibration batches of the user's
data, without labels (Minitron's activation-based importance): a head's importance is the mean norm
of what it adds to the residual stream (its context vectors through its slice of the output
projection), a neuron's the mean |activation| times the norm of its output weights, both over real
tokens of the largest arch. The permutation moves whole rows and columns, so the full model computes
exactly what it did. A decoder's blocks are ordered too (`order_blocks_by_importance`), by ShortGPT's
block influence; the largest arch still runs them in the model's order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from supernet.model import Supernet
from supernet.subnet import padding_mask


@torch.no_grad()
def importance(supernet: Supernet, calibration: Tensor, batch_size: int = 64) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: the importance of each head (max_heads,) and of each MLP neuron (max_hidden,), summed over
    the calibration tokens."""
    largest = supernet.space.largest()
    head_dim = supernet.space.head_dim
    heads = [torch.zeros(b.attention.query.out_features // head_dim) for b in supernet.blocks]
    neurons = [torch.zeros(b.mlp.fc1.out_features) for b in supernet.blocks]
    current: dict[str, Tensor | None] = {"mask": None}

    def weights_of(x: Tensor) -> Tensor:  # (batch, tokens, 1): 1 at real tokens
        mask = current["mask"]
        return torch.ones(*x.shape[:2], 1) if mask is None else mask.to(x.dtype).unsqueeze(-1)

    def on_heads(i: int):
        def hook(module, args):
            (x,) = args[:1]
            w_out = module.weight[:, : x.shape[-1]]
            count = x.shape[-1] // head_dim
            parts = x.view(*x.shape[:2], count, head_dim)
            # what each head adds: its context vectors through its columns of the output projection
            added = torch.einsum("btnd,end->btne", parts, w_out.view(w_out.shape[0], count, head_dim))
            heads[i][:count] += (added.norm(dim=-1) * weights_of(x)).sum(dim=(0, 1))
        return hook

    def on_neurons(i: int):
        def hook(module, args):
            (x,) = args[:1]
            out_norm = module.weight[:, : x.shape[-1]].norm(dim=0)
            neurons[i][: x.shape[-1]] += (x.abs() * weights_of(x)).sum(dim=(0, 1)) * out_norm
        return hook

    handles = []
    for i, block in enumerate(supernet.blocks):
        handles.append(block.attention.out.register_forward_pre_hook(on_heads(i)))
        handles.append(block.mlp.fc2.register_forward_pre_hook(on_neurons(i)))
    was_training = supernet.training
    supernet.eval()
    try:
        for begin in range(0, len(calibration), batch_size):
            x = calibration[begin:begin + batch_size]
            current["mask"] = padding_mask(x, supernet.task.input_kind, supernet.task.style)
            supernet(x, largest)
    finally:
        for handle in handles:
            handle.remove()
        supernet.train(was_training)
    return heads, neurons  # sums over the same tokens for every unit of a layer: their order is the mean's


def _permute_rows(layer, order: Tensor) -> None:
    layer.weight.copy_(layer.weight[order])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[order])


@torch.no_grad()
def reorder_by_importance(supernet: Supernet, calibration: Tensor) -> dict[str, list[list[int]]]:
    """Permute every layer's heads and neurons into descending importance; return the orders. Where
    query heads share key-value heads (grouped-query attention), whole groups move, by the importance of
    their query heads together."""
    head_scores, neuron_scores = importance(supernet, calibration)
    head_dim, group = supernet.space.head_dim, supernet.task.style.heads_per_kv
    orders: dict[str, list[list[int]]] = {"heads": [], "neurons": []}
    for block, head_score, neuron_score in zip(supernet.blocks, head_scores, neuron_scores, strict=True):
        group_order = torch.argsort(head_score.view(-1, group).sum(dim=1), descending=True, stable=True)
        head_order = (group_order[:, None] * group + torch.arange(group)).reshape(-1)
        rows = (head_order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        kv_rows = (group_order[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        attention = block.attention
        _permute_rows(attention.query, rows)
        _permute_rows(attention.key, kv_rows)
        _permute_rows(attention.value, kv_rows)
        attention.out.weight.copy_(attention.out.weight[:, rows])
        neuron_order = torch.argsort(neuron_score, descending=True, stable=True)
        mlp = block.mlp
        for layer in (mlp.fc1, mlp.gate) if mlp.gate is not None else (mlp.fc1,):
            _permute_rows(layer, neuron_order)
        mlp.fc2.weight.copy_(mlp.fc2.weight[:, neuron_order])
        orders["heads"].append(head_order.tolist())
        orders["neurons"].append(neuron_order.tolist())
    return orders


@torch.no_grad()
def block_influence(supernet: Supernet, calibration: Tensor, batch_size: int = 64) -> Tensor:
    """Per slot, ShortGPT's block influence: 1 - the mean cosine similarity of a token's hidden state before
    and after the block, over the calibration tokens of the largest arch. A block that changes little of
    what it is given is the first to drop."""
    largest = supernet.space.largest()
    similarity, count = torch.zeros(len(supernet.blocks)), 0

    def on_block(i: int):
        def hook(module, args, output):
            similarity[i] += torch.nn.functional.cosine_similarity(args[0], output, dim=-1).sum()
        return hook

    handles = [block.register_forward_hook(on_block(i)) for i, block in enumerate(supernet.blocks)]
    was_training = supernet.training
    supernet.eval()
    try:
        for begin in range(0, len(calibration), batch_size):
            x = calibration[begin:begin + batch_size]
            supernet(x, largest)
            count += x.shape[0] * x.shape[1]
    finally:
        for handle in handles:
            handle.remove()
        supernet.train(was_training)
    return 1.0 - similarity / max(count, 1)


@torch.no_grad()
def order_blocks_by_importance(supernet: Supernet, calibration: Tensor) -> list[int]:
    """Put a decoder's blocks into slots by descending block influence (an arch of depth k keeps the first k
    slots, and runs them in the model's order: `Supernet.block_order`); return the model's block in each slot."""
    influence = block_influence(supernet, calibration)
    slots = torch.argsort(influence, descending=True, stable=True)
    blocks = list(supernet.blocks)
    for slot, previous in enumerate(slots.tolist()):
        supernet.blocks[slot] = blocks[previous]
    supernet.block_order.copy_(supernet.block_order[slots])
    return supernet.block_order.tolist()
