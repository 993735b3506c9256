"""The elastic transformer: one set of weights holding every arch of a space.

An encoder whose every dimension is sliced from the largest weights (weight
entanglement, as in AutoFormer and HAT): the active path uses the top-left
block of each weight matrix, so it slices and never masks. Each elastic
module produces its static counterpart with `get_active_subnet` (as in
Once-for-All), and `Supernet.extract(arch)` assembles them into a plain model
that holds only the sliced weights.

Its layout follows a `ModelStyle`: ours (pre-LN, mean pooling) by default, or
an imported family's (BERT's post-LN blocks, embedding LayerNorm, token types
and [CLS] pooler; ViT's [CLS] token; a decoder LM's RMSNorm, rotary positions,
gated MLP, grouped-query heads and LM head), so that an imported model's
largest arch computes what the pretrained model computes. Text inputs carry
padding: the padding mask reaches every attention kernel and the pooling.

A decoder's blocks sit in slots by importance (`block_order`, set by the
import): an arch of depth k keeps the first k slots, the k most important
blocks, and runs them in the pretrained model's order, so that a shallower
model drops the blocks that matter least (ShortGPT), not the last ones.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import Arch, LayerArch, SearchSpace
from search_space.layer_genes import factor_of
from supernet.elastic_layers import ElasticLinear, elastic_norm, parameter_copy
from supernet.mixers import mixer_of, offered
from supernet.mixers.attention import HeadLayout
from supernet.preflight import ensure_fits_in_memory
from supernet.quant import (
    DEFAULT_BLOCK_SIZE,
    FULL_PRECISION,
    QuantTable,
    fake_quantize_rows,
)
from supernet.subnet import (
    MLP,
    Block,
    Head,
    Stem,
    Subnet,
    embed_inputs,
    mlp_hidden_out,
    padding_mask,
    pool_tokens,
    residual,
    run_order,
)
from supernet.task_spec import ModelStyle, TaskSpec, position_rows, unpadded_tokens
from supernet.token_reduction import elastic_boundaries, input_layout, layer_layouts

# ---- elastic modules -------------------------------------------------------

class ElasticMixer(nn.Module):
    """The token-mixing sublayer: the Q/K/V/O projections every mixer shares (heads sliced with a fixed
    head dim; a decoder's keys and values with a head for every `heads_per_kv` query heads), and the extra
    weights the offered mixers ask for (a `conv<k>`'s kernel, Qwen3's norms of queries and keys). What each
    mixer computes, and the static module it becomes, is its definition's (`supernet.mixers`)."""

    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, local_window: int, mixers: tuple[str, ...],
                 block_size: int = DEFAULT_BLOCK_SIZE, style: ModelStyle = ModelStyle()):
        super().__init__()
        self.head_dim, self.local_window = head_dim, local_window
        self.layout = HeadLayout(style.heads_per_kv, style.rope_theta)
        inner, kv_inner = max_heads * head_dim, self.layout.kv_heads(max_heads) * head_dim
        self.query = ElasticLinear(embed_dim, inner, bias=style.qkv_bias, block_size=block_size)
        self.key = ElasticLinear(embed_dim, kv_inner, bias=style.qkv_bias, block_size=block_size)
        self.value = ElasticLinear(embed_dim, kv_inner, bias=style.qkv_bias, block_size=block_size)
        self.out = ElasticLinear(inner, embed_dim, bias=style.out_bias, block_size=block_size)
        self.q_norm = nn.RMSNorm(head_dim, eps=style.norm_eps) if style.qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=style.norm_eps) if style.qk_norm else None
        by_definition = offered(mixers)
        self.definitions = tuple(by_definition)
        # only what an offered mixer asks for: a space without it keeps its checkpoints' keys
        for definition, names in by_definition.items():
            for name, shape in definition.weight_shapes(names, inner).items():
                self.register_parameter(name, nn.Parameter(torch.zeros(shape)))

    def forward(self, x: Tensor, num_heads: int, mixer: str, bits: int, mask: Tensor | None = None) -> Tensor:
        return mixer_of(mixer).forward(self, x, mixer, num_heads, bits, mask)

    def projection_size(self, projection: str, num_heads: int) -> int:
        """The active outputs of shared projection `projection` at `num_heads` query heads."""
        heads = self.layout.kv_heads(num_heads) if projection in ("key", "value") else num_heads
        return heads * self.head_dim

    def get_active_subnet(self, embed_dim: int, num_heads: int, mixer: str, bits: int,
                          tokens: int | None = None) -> nn.Module | None:
        """`tokens`: the length of an input without padding (a static mixer may hold what depends on it)."""
        return mixer_of(mixer).extract(self, embed_dim, mixer, num_heads, bits, tokens)


class ElasticMLP(nn.Module):
    """fc2(act(fc1(x))), or with `gated`, fc2(act(gate(x)) * fc1(x)) (SwiGLU: fc1 is Llama's up_proj, fc2
    its down_proj); a hidden unit is a row of fc1 (and gate) and a column of fc2, sliced together."""

    def __init__(self, embed_dim: int, max_hidden: int, activation: str = "gelu", block_size: int = DEFAULT_BLOCK_SIZE,
                 gated: bool = False, bias: bool = True):
        super().__init__()
        self.fc1 = ElasticLinear(embed_dim, max_hidden, bias=bias, block_size=block_size)
        self.gate = ElasticLinear(embed_dim, max_hidden, bias=bias, block_size=block_size) if gated else None
        self.fc2 = ElasticLinear(max_hidden, embed_dim, bias=bias, block_size=block_size)
        self.activation = activation

    def forward(self, x: Tensor, hidden: int, bits: int) -> Tensor:
        gate = None if self.gate is None else (lambda h: self.gate(h, hidden, bits))
        return mlp_hidden_out(x, lambda h: self.fc1(h, hidden, bits), gate,
                              lambda h: self.fc2(h, x.shape[-1], bits), self.activation)

    def get_active_subnet(self, embed_dim: int, hidden: int, bits: int) -> MLP:
        return MLP(self.fc1.get_active_subnet(embed_dim, hidden, bits),
                   self.fc2.get_active_subnet(hidden, embed_dim, bits), self.activation,
                   gate=None if self.gate is None else self.gate.get_active_subnet(embed_dim, hidden, bits))


class ElasticBlock(nn.Module):
    """One encoder layer. With `join` (a space with layer widths, every layer after the first), a
    projection from the previous layer's width to this one's, used where they differ."""

    def __init__(self, embed_dim: int, max_heads: int, head_dim: int, max_hidden: int, local_window: int,
                 mixers: tuple[str, ...], style: ModelStyle = ModelStyle(),
                 block_size: int = DEFAULT_BLOCK_SIZE, join: bool = False):
        super().__init__()
        self.join = ElasticLinear(embed_dim, embed_dim) if join else None
        self.norm_first = style.norm_first
        self.norm1 = elastic_norm(embed_dim, style)
        self.attention = ElasticMixer(embed_dim, max_heads, head_dim, local_window, mixers, block_size, style)
        self.norm2 = elastic_norm(embed_dim, style)
        self.mlp = ElasticMLP(embed_dim, max_hidden, style.activation, block_size, style.gated_mlp, style.mlp_bias)

    def forward(self, x: Tensor, layer: LayerArch, mask: Tensor | None = None, width: int | None = None) -> Tensor:
        """`width`: the layer's (default: the input's); where the input is of another, the join maps it."""
        if width is not None and width != x.shape[-1]:
            x = self.join(x, width)
        mix = (lambda h: self.attention(h, layer.num_heads, layer.mixer, layer.bits, mask)) \
            if mixer_of(layer.mixer).sublayer else None
        return residual(x, mix, lambda h: self.mlp(h, layer.mlp_dim, layer.bits), self.norm1, self.norm2,
                        self.norm_first)

    def get_active_subnet(self, embed_dim: int, layer: LayerArch, in_width: int | None = None,
                          tokens: int | None = None) -> Block:
        """The static layer at `embed_dim` (its width), fed at `in_width` (default: its own); `tokens`: the
        length of inputs without padding."""
        join = (self.join.get_active_subnet(in_width, embed_dim)
                if in_width is not None and in_width != embed_dim else None)
        mixer = self.attention.get_active_subnet(embed_dim, layer.num_heads, layer.mixer, layer.bits, tokens)
        return Block(None if mixer is None and self.norm_first else self.norm1.get_active_subnet(embed_dim), mixer,
                     self.norm2.get_active_subnet(embed_dim),
                     self.mlp.get_active_subnet(embed_dim, layer.mlp_dim, layer.bits), self.norm_first, join=join)


class ElasticStem(nn.Module):
    """Input -> tokens of the active embedding dim: embeddings, positions, and the style's extras.
    Its tables (token, position and token-type embeddings) are read at `table_bits`."""

    def __init__(self, task: TaskSpec, embed_dim: int, table_bits: int = FULL_PRECISION):
        super().__init__()
        style = task.style
        self.input_kind, self.style, self.table_bits = task.input_kind, style, table_bits
        if task.input_kind in ("tokens", "text"):
            self.embed = nn.Embedding(task.input_dim, embed_dim)
        else:
            self.embed = ElasticLinear(task.input_dim, embed_dim)
        self.position = nn.Parameter(torch.zeros(position_rows(task), embed_dim)) if style.position_table else None
        self.token_type = nn.Parameter(torch.zeros(style.token_types, embed_dim)) if style.token_types else None
        self.cls_token = nn.Parameter(torch.zeros(embed_dim)) if style.cls_token else None
        self.norm = elastic_norm(embed_dim, style) if style.embedding_norm else None

    def forward(self, x: Tensor, embed_dim: int, norm: bool = True) -> Tensor:
        """Token vectors of `x` at `embed_dim` (`norm`: with the embedding norm, where the style has one)."""
        bits = self.table_bits
        if self.input_kind in ("tokens", "text"):
            embed = lambda ids: fake_quantize_rows(F.embedding(ids, self.embed.weight[:, :embed_dim]), bits)  # noqa: E731
        else:
            embed = lambda features: self.embed(features, embed_dim)  # noqa: E731
        return embed_inputs(
            x, self.input_kind, self.style, embed,
            None if self.position is None else fake_quantize_rows(self.position[:, :embed_dim], bits),
            None if self.token_type is None else fake_quantize_rows(self.token_type[:, :embed_dim], bits),
            None if self.cls_token is None else self.cls_token[:embed_dim], self.norm if norm else None)

    def get_active_subnet(self, embed_dim: int) -> Stem:
        def table(weight: Tensor) -> nn.Module | nn.Parameter:
            return parameter_copy(weight) if self.table_bits >= FULL_PRECISION else QuantTable(weight, self.table_bits)

        if self.input_kind in ("tokens", "text"):
            weight = self.embed.weight[:, :embed_dim].detach()
            embed = (nn.Embedding.from_pretrained(weight.clone(), freeze=False) if self.table_bits >= FULL_PRECISION
                     else QuantTable(weight, self.table_bits))
        else:
            embed = self.embed.get_active_subnet(self.embed.in_features, embed_dim)
        return Stem(embed, None if self.position is None else table(self.position[:, :embed_dim]), self.input_kind,
                    self.style,
                    token_type=None if self.token_type is None else table(self.token_type[:, :embed_dim]),
                    cls_token=None if self.cls_token is None else parameter_copy(self.cls_token[:embed_dim]),
                    norm=None if self.norm is None else self.norm.get_active_subnet(embed_dim))


class ElasticHead(nn.Module):
    """Final norm, pooling (mean over real tokens or [CLS], then the pooler), classifier; a causal style's
    pools nothing: its classifier is the LM head, on every token (without bias)."""

    def __init__(self, embed_dim: int, num_classes: int, style: ModelStyle = ModelStyle()):
        super().__init__()
        self.style = style
        self.norm = elastic_norm(embed_dim, style) if style.final_norm else None
        self.pooler = ElasticLinear(embed_dim, embed_dim) if style.pooler else None
        self.classifier = ElasticLinear(embed_dim, num_classes, bias=not style.causal)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        pooler = None if self.pooler is None else (lambda h: self.pooler(h, h.shape[-1]))
        return self.classifier(pool_tokens(x, mask, self.style, self.norm, pooler))

    def get_active_subnet(self, embed_dim: int) -> Head:
        return Head(None if self.norm is None else self.norm.get_active_subnet(embed_dim),
                    self.classifier.get_active_subnet(embed_dim, self.classifier.out_features), self.style,
                    pooler=None if self.pooler is None else self.pooler.get_active_subnet(embed_dim, embed_dim))


# ---- the supernet ----------------------------------------------------------

class Supernet(nn.Module):
    def __init__(self, space: SearchSpace, task: TaskSpec, seed: int = 0):
        super().__init__()
        ensure_fits_in_memory(space, task)  # before the allocator tries hundreds of GB
        self.space, self.task = space, task
        embed_dim = space.max_embed_dim
        self.stem = ElasticStem(task, embed_dim, space.table_bits)
        self.blocks = nn.ModuleList(
            ElasticBlock(embed_dim, space.max_heads(i), space.head_dim, space.max_mlp_dim(i), space.local_window,
                         space.layers[i].mixer, task.style, space.quant_block_size,
                         join=space.has_layer_widths and i > 0)
            for i in range(space.max_depth))
        # a stage boundary's reductions, before each layer that may start a stage (ViT-ResNAS)
        self.reductions = elastic_boundaries(space, task, embed_dim)
        self.head = ElasticHead(embed_dim, task.num_classes, task.style)  # the deepest arch's, or every arch's
        # with a head per depth, the shallower depths' (an arch of depth k reads its k-th layer's output)
        # pool the mean over real tokens: after a few layers the [CLS] token has seen little of the input
        shallow = replace(task.style, pooling="mean")
        self.exits = nn.ModuleDict({str(depth): ElasticHead(embed_dim, task.num_classes, shallow)
                                    for depth in space.depths if space.depth_heads and depth < space.max_depth})
        if task.style.causal:  # slot i holds the model's block block_order[i] (the import orders them)
            self.register_buffer("block_order", torch.arange(space.max_depth))
        generator = torch.Generator().manual_seed(seed)
        self.apply(lambda module: _init_weights(module, generator))
        if task.style.tie_embeddings:  # after the init: one parameter, drawn once
            self.head.classifier.weight = self.stem.embed.weight

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        for _, h, mask in self._layers(x, arch):  # noqa: B007 - only the last output is kept, not every layer's
            pass
        return self.head_of(arch.depth)(h, mask)

    def slots(self, arch: Arch) -> list[int]:
        """The slots `arch` runs, in the order it runs them (a decoder's: the pretrained model's)."""
        return run_order(getattr(self, "block_order", None), arch.depth)

    def _layers(self, x: Tensor, arch: Arch):
        """(depth, tokens, padding mask) after each layer of `arch`, its tokens reduced at its stage boundaries."""
        mask = padding_mask(x, self.task.input_kind, self.task.style)
        h = self.stem(x, arch.embed_dim)
        layout = input_layout(self.task)
        for ran, i in enumerate(self.slots(arch), start=1):
            block, layer = self.blocks[i], arch.layers[i]
            factor = factor_of(arch, i)
            if factor > 1:
                h, mask = self.reductions[str(i)](h, mask, layout, factor)
                layout = layout.reduced(factor)
            h = block(h, layer, mask, arch.width_of(i))
            yield ran, h, mask

    def head_of(self, depth: int) -> ElasticHead:
        """The head that reads the output of an arch of `depth` layers."""
        return self.exits[str(depth)] if str(depth) in self.exits else self.head

    def exit_logits(self, x: Tensor, arch: Arch) -> list[tuple[int, Tensor]]:
        """(depth, logits) of every depth of the space up to `arch`'s that has a head of its own, in one
        pass: the first k layers of `arch` are an arch of depth k, so one pass of the largest trains
        every full-width depth. Without a head per depth, only `arch`'s own logits."""
        if not self.exits:
            return [(arch.depth, self(x, arch))]
        logits = []
        for depth, h, mask in self._layers(x, arch):
            if str(depth) in self.exits or depth == arch.depth:
                logits.append((depth, self.head_of(depth)(h, mask)))
        return logits

    def extract(self, arch: Arch) -> Subnet:
        """A static model of `arch`: plain layers holding copies of the sliced weights."""
        self.space.validate(arch)
        with torch.no_grad():
            widths, layouts = arch.widths, [input_layout(self.task), *layer_layouts(self.task, arch)]
            unpadded = unpadded_tokens(self.task) is not None
            into = [widths[i - 1] if i else arch.embed_dim for i in range(arch.depth)]  # each layer's input width
            subnet = Subnet(
                self.stem.get_active_subnet(arch.embed_dim),
                [self.blocks[i].get_active_subnet(widths[i], arch.layers[i], into[i],
                                                  layouts[i + 1].tokens if unpadded else None)
                 for i in self.slots(arch)],
                self.head_of(arch.depth).get_active_subnet(arch.out_width),
                arch_json=arch.to_json(),
                reductions={i: self.reductions[str(i)].get_active_subnet(into[i], layouts[i], factor_of(arch, i))
                            for i in range(arch.depth) if factor_of(arch, i) > 1})
            if self.task.style.tie_embeddings and isinstance(subnet.stem.embed, nn.Embedding):
                subnet.head.classifier.weight = subnet.stem.embed.weight  # tied in the static model too
        return subnet.train(self.training)


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    if isinstance(module, ElasticBlock) and module.join is not None:
        # the identity's top-left: a narrower layer first reads the leading channels, a wider one
        # receives them with zeros beside (applied after the join's own Linear was drawn)
        with torch.no_grad():
            module.join.weight.copy_(torch.eye(module.join.out_features, module.join.in_features))
    if isinstance(module, ElasticMixer):
        for definition in module.definitions:
            definition.init_weights(module, generator)
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02, generator=generator)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    if isinstance(module, nn.RMSNorm):
        nn.init.ones_(module.weight)
    elif isinstance(module, ElasticStem):
        for extra in (module.position, module.token_type, module.cls_token):
            if extra is not None:
                nn.init.normal_(extra, std=0.02, generator=generator)
