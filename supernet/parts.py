"""A static model's parts as a runtime exports them, one graph per distinct part: the stem, the reduction of
each stage boundary, each layer, the head (`Subnet.parts()` in that order). `part_keys` names, for an arch,
what tells one part's graph from another's without building the model; `probe_part` builds the part of a
key from a supernet (a runtime's small probe), with an input of the part's shape. So a runtime sizes and
caches graphs by these keys and holds no branch on what a layer or a boundary is."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from search_space import Arch, LayerArch, SearchSpace
from search_space.layer_genes import BOUNDARY, factor_of
from supernet.task_spec import unpadded_tokens
from supernet.token_reduction import input_layout, layer_layouts


def part_keys(supernet, arch: Arch) -> list[tuple]:
    """One key per part of `arch`'s static model, in the order they run."""
    task = supernet.task
    keys, layouts = [("stem",)], [input_layout(task), *layer_layouts(task, arch)]
    for i, layer in enumerate(arch.layers):
        if layouts[i + 1] != layouts[i]:  # a stage boundary: its reduction holds its factor and the layout it meets
            keys.append(("reduction", factor_of(arch, i), layouts[i]))
        keys.append(("block", layer.mixer, layer.bits))
    keys.append(("head", str(arch.depth) in supernet.exits))
    return keys


def probe_part(supernet, space: SearchSpace, key: tuple, width: int, hidden: tuple[Tensor, ...]
               ) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The part of `key` at `width` (the smallest choices where the key leaves them free) and an input of its
    shape; `hidden`: the token vectors after the stem (and the padding mask, for a padded text)."""
    kind = key[0]
    if kind == "reduction":
        _, factor, layout = key
        index = next(i for i, c in enumerate(space.layers) if factor in c.gene_values(BOUNDARY.key))
        part = supernet.reductions[str(index)].get_active_subnet(width, layout, factor)
        mask = (torch.ones(1, layout.tokens, dtype=torch.bool),) if len(hidden) > 1 else ()
        return part, (torch.zeros(1, layout.tokens, width), *mask)
    if kind == "block":
        _, mixer, bits = key
        index = next(i for i, c in enumerate(space.layers) if mixer in c.mixer and bits in c.bits)
        choices = space.layers[index]
        layer = LayerArch(min(choices.num_heads), min(choices.mlp_dims(width)), mixer, bits)
        return supernet.blocks[index].get_active_subnet(width, layer, tokens=unpadded_tokens(supernet.task)), hidden
    if kind == "head":
        depth = next((d for d in space.depths if str(d) in supernet.exits), None) if key[1] else space.max_depth
        return supernet.head_of(depth).get_active_subnet(width), hidden
    raise KeyError(f"no part of kind {kind!r} (the stem is the runtime's first part)")
