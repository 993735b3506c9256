"""The static model that `Supernet.extract` produces, and the computations it shares with the supernet.

A plain encoder: a stem (embeddings, positions, token types, [CLS] token), pre- or post-LN blocks of
attention and MLP, a pooled head; or a decoder LM of the same parts: causal attention, its head the LM head
on every token. It holds only the sliced weights of one arch and depends on nothing of the supernet; its
layers are `nn.Linear` or, where the arch quantizes them, `QuantLinear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supernet.quant import QuantTable
from supernet.task_spec import ModelStyle, padded_kind

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def residual(x: Tensor, attention, mlp, norm1, norm2, norm_first: bool) -> Tensor:
    """One encoder block: pre-LN (norm, then the sublayer, then the residual) or post-LN (the
    sublayer, the residual, then the norm), the same code for the elastic and the static block.
    `attention` None: a layer without a mixing sublayer (pre-LN: nor its norm; post-LN: the norm stays)."""
    if norm_first:
        if attention is not None:
            x = x + attention(norm1(x))
        return x + mlp(norm2(x))
    x = norm1(x + attention(x) if attention is not None else x)
    return norm2(x + mlp(x))


def graph_settings(module: nn.Module) -> tuple[tuple[str, object], ...]:
    """What an exported graph of `module` depends on besides its weights' values: the settings its
    class declares in `graph_settings` (torch's LayerNorm: its eps). A runtime that exports one graph
    per structure keys it by these, so a static module that a setting changes the graph of declares it."""
    names = getattr(module, "graph_settings", ("eps",) if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) else ())
    settings = tuple((name, getattr(module, name)) for name in names)
    if isinstance(module, nn.Linear) and module.bias is None:  # a decoder's (only then: other keys stay)
        settings += (("bias", False),)
    return settings


def padding_mask(x: Tensor, kind: str, style: ModelStyle) -> Tensor | None:
    """(batch, tokens) True at real tokens of a padded input (a text, a causal model's tokens); None where
    nothing is padded."""
    if not padded_kind(kind, style) or style.pad_token_id is None:
        return None
    return (x[..., 0] if kind == "text" else x) != style.pad_token_id


def run_order(block_order: Tensor | None, depth: int) -> list[int]:
    """The slots an arch of `depth` layers runs, in order: the first `depth` slots, sorted by the position
    of the block each holds (`block_order`, a decoder's); without it, slot by slot."""
    if block_order is None:
        return list(range(depth))
    positions = block_order[:depth].tolist()
    return sorted(range(depth), key=positions.__getitem__)


def embed_inputs(x: Tensor, kind: str, style: ModelStyle, embed, position: Tensor | None,
                 token_type: Tensor | None, cls_token: Tensor | None, norm, positions: Tensor | None = None
                 ) -> Tensor:
    """Input -> token vectors: the embedding (a table for ids, a linear map for features), the
    [CLS] token, positions (None: rotary, applied in attention) and token types, and the embedding norm;
    shared by the elastic and the static stem. `embed` maps inputs to vectors; the tensors are already
    sliced to the width. `positions` (batch, tokens): each token's row of the position table, where a
    decoder's new tokens continue a cached sequence (default: 0, 1, ...)."""
    ids = x[..., 0] if kind == "text" else x
    h = embed(ids)
    if cls_token is not None:
        h = torch.cat([cls_token.expand(h.shape[0], 1, -1), h], dim=1)
    tokens = h.shape[1]
    if position is None:
        pass
    elif positions is not None:
        h = h + F.embedding(positions, position)
    elif style.position_offset is not None:  # RoBERTa: real tokens count from the offset, padding sits at it
        real = (ids != style.pad_token_id).long()
        h = h + F.embedding(torch.cumsum(real, dim=1) * real + style.position_offset, position)
    else:
        h = h + position[:tokens]
    if token_type is not None:
        h = h + F.embedding(x[..., 1], token_type)
    return norm(h) if norm is not None else h


def pool_tokens(h: Tensor, mask: Tensor | None, style: ModelStyle, norm, pooler) -> Tensor:
    """Token vectors -> one vector: the norm (per token), then [CLS] or the mean over real tokens,
    then the pooler (dense + tanh) where the style has one. A causal style's pools nothing: every token
    is read (its next token's logits)."""
    if norm is not None:
        h = norm(h)
    if style.causal:
        return h
    if style.pooling == "cls":
        pooled = h[:, 0]
    elif mask is None:
        pooled = h.mean(dim=1)
    else:
        weights = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    return torch.tanh(pooler(pooled)) if pooler is not None else pooled


def mlp_hidden_out(x: Tensor, fc1, gate, fc2, activation: str) -> Tensor:
    """fc2(act(fc1(x))), or where `gate` is given, fc2(act(gate(x)) * fc1(x)) (SwiGLU)."""
    if gate is None:
        return fc2(ACTIVATIONS[activation](fc1(x)))
    return fc2(ACTIVATIONS[activation](gate(x)) * fc1(x))


class MLP(nn.Module):
    graph_settings = ("activation",)

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, activation: str = "gelu", gate: nn.Linear | None = None):
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2
        self.gate = gate
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return mlp_hidden_out(x, self.fc1, self.gate, self.fc2, self.activation)


class Block(nn.Module):
    """An encoder layer; `attention` is any token mixer taking (x, mask), or None for a layer without one
    (then pre-LN has no `norm1`). `join`, where given, maps the previous layer's width to this one's."""

    graph_settings = ("norm_first",)

    def __init__(self, norm1: nn.LayerNorm | None, attention: nn.Module | None, norm2: nn.LayerNorm, mlp: MLP,
                 norm_first: bool = True, join: nn.Linear | None = None):
        super().__init__()
        self.join = join
        self.norm1, self.attention, self.norm2, self.mlp = norm1, attention, norm2, mlp
        self.norm_first = norm_first

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.join is not None:
            x = self.join(x)
        mix = None if self.attention is None else (lambda h: self.attention(h, mask))
        return residual(x, mix, self.mlp, self.norm1, self.norm2, self.norm_first)


def _table(table: nn.Module | Tensor) -> Tensor:
    """The values of a static table: a tensor, or a quantized table (read whole)."""
    return table() if isinstance(table, nn.Module) else table


class Stem(nn.Module):
    """The static stem. Its tables (`embed` for ids, `position`, `token_type`) are tensors, or
    `QuantTable`s where the space quantizes embeddings."""

    graph_settings = ("input_kind", "style")

    def __init__(self, embed: nn.Module, position: nn.Parameter | QuantTable | None, input_kind: str = "features",
                 style: ModelStyle = ModelStyle(), token_type: nn.Parameter | QuantTable | None = None,
                 cls_token: nn.Parameter | None = None, norm: nn.LayerNorm | None = None):
        super().__init__()
        self.embed = embed
        self.position = position
        self.token_type, self.cls_token, self.norm = token_type, cls_token, norm
        self.input_kind, self.style = input_kind, style

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        return embed_inputs(x, self.input_kind, self.style, self.embed,
                            None if self.position is None else _table(self.position),
                            None if self.token_type is None else _table(self.token_type), self.cls_token, self.norm,
                            positions)

    def padding_mask(self, x: Tensor) -> Tensor | None:
        return padding_mask(x, self.input_kind, self.style)


class Head(nn.Module):
    graph_settings = ("style",)

    def __init__(self, norm: nn.LayerNorm | None, classifier: nn.Linear, style: ModelStyle = ModelStyle(),
                 pooler: nn.Linear | None = None):
        super().__init__()
        self.norm, self.classifier, self.pooler = norm, classifier, pooler
        self.style = style

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.classifier(pool_tokens(x, mask, self.style, self.norm, self.pooler))


class Subnet(nn.Module):
    """A static transformer extracted from the supernet; depends on nothing of it. `reductions`: the
    token reduction before a layer (by its index) that starts a stage (`token_reduction.Reduction`)."""

    def __init__(self, stem: Stem, blocks: list[Block], head: Head, arch_json: str,
                 reductions: dict[int, nn.Module] | None = None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.arch_json = arch_json
        self.reductions = nn.ModuleDict({str(i): r for i, r in (reductions or {}).items()})

    def parts(self) -> list[nn.Module]:
        """Its modules in the order they run: the stem, each layer after its stage's reduction, the head."""
        order = [self.stem]
        for i, block in enumerate(self.blocks):
            order += [self.reductions[str(i)], block] if str(i) in self.reductions else [block]
        return [*order, self.head]

    def forward(self, x: Tensor) -> Tensor:
        mask = self.stem.padding_mask(x)
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            if str(i) in self.reductions:
                reduced = self.reductions[str(i)](h, mask)
                h, mask = reduced if mask is not None else (reduced, None)
            h = block(h, mask)
        return self.head(h, mask)
