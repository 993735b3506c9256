"""Analytic cost model: exact parameters, MACs and bytes of an arch.

Costs are computed per layer and per operation, split by bit width, so that
predictors see where the work is (a layer-averaged encoding loses that). MACs
follow what the kernels actually compute; each mixer's are its definition's
(`supernet.mixers`: `local` attention below the sliding-window threshold runs
the masked fused kernel, which costs T^2). A
layer after a stage boundary (`supernet.token_reduction`) costs its reduced
tokens, and the boundary its norm, its pooling and its projection; `stages`
splits the layers' MACs and bytes by stage.

Bytes are the size of the ONNX Runtime artifact (`model.onnx`): the weights as
it stores them (fp32: 4 bytes; 8-bit: 1 byte, with an fp32 scale, and a uint8
zero point where this CPU's int8 kernel needs unsigned weights, per output
channel; 4- and 2-bit: half or a quarter of a byte, with an fp32 scale per
block; quantized embedding tables: 1 byte, with an fp32 scale per row; biases
and norms fp32), plus its graph, measured once per part structure
(`onnx_runtime.graph_bytes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from predictors.runtimes.onnx_chaining import SHARED_WEIGHT_BYTES
from predictors.runtimes.onnx_lowering import int8_weight_type
from predictors.runtimes.onnx_runtime import graph_bytes
from predictors.target import decode_context
from search_space import Arch, SearchSpace
from supernet.mixers import MixerShape, mixer_of, projection_shapes
from supernet.quant import BYTE_BITS, DEFAULT_BLOCK_SIZE, FULL_PRECISION
from supernet.task_spec import TaskSpec, position_rows, unpadded_tokens
from supernet.token_reduction import boundary_costs, input_layout, layer_layouts


def _linear_bytes(in_features: int, out_features: int, bits: int, block_size: int = DEFAULT_BLOCK_SIZE,
                  bias: bool = True) -> int:
    """Bytes of one Linear layer's weights, scales, zero points and bias in the artifact."""
    bias = 4 * out_features if bias else 0
    if bits >= FULL_PRECISION:
        return 4 * in_features * out_features + bias
    if bits >= BYTE_BITS:
        zero_points = out_features if int8_weight_type() == "uint8" else 0
        return in_features * out_features + 4 * out_features + zero_points + bias
    blocks = in_features // block_size
    return out_features * blocks * (block_size * bits // 8) + 4 * out_features * blocks + bias


def _table_bytes(rows: int, dim: int, bits: int) -> int:
    return 4 * rows * dim if bits >= FULL_PRECISION else rows * dim + 4 * rows


@dataclass
class Costs:
    params: int = 0
    macs: int = 0
    weight_bytes: int = 0  # what the artifact's weights take
    by_op: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # "op@bits" or "op:kind"
    per_layer: list[dict[str, float]] = field(default_factory=list)
    # per stage (the layers from one boundary to the next, the reduction that opens it included): its first
    # layer's index, the tokens its layers see, its MACs and weight bytes
    stages: list[dict[str, int]] = field(default_factory=list)
    graph_bytes: Callable[[], int] = lambda: 0  # the rest of the artifact, measured only when asked

    @property
    def bytes(self) -> int:
        """The artifact's size: weights and graph."""
        return self.weight_bytes + self.graph_bytes()


def arch_costs(space: SearchSpace, task: TaskSpec, arch: Arch, batch_size: int = 1,
               seq_len: int | None = None) -> Costs:
    """Parameters, MACs (for `batch_size` samples of `seq_len` tokens) and bytes of `arch`."""
    tokens = seq_len or task.seq_len
    e = arch.embed_dim
    costs = Costs(graph_bytes=lambda: graph_bytes(space, task, arch))

    def add(op: str, params: int, macs: int, nbytes: int, layer: dict | None = None) -> None:
        costs.params += params
        costs.macs += macs * batch_size
        costs.weight_bytes += nbytes
        costs.by_op[op] += macs * batch_size
        if layer is not None:
            layer[op] = layer.get(op, 0) + macs * batch_size
            costs.stages[-1]["macs"] += macs * batch_size
            costs.stages[-1]["weight_bytes"] += nbytes

    style, table = task.style, space.table_bits
    norm_params = 1 if style.norm == "rms" else 2  # a weight (and a bias) per channel
    if task.input_kind in ("tokens", "text"):
        add("embedding", task.input_dim * e + style.token_types * e, 0,
            _table_bytes(task.input_dim, e, table) + (_table_bytes(style.token_types, e, table)
                                                       if style.token_types else 0))
    else:
        add("linear@32", task.input_dim * e + e, tokens * task.input_dim * e, _linear_bytes(task.input_dim, e, 32))
    rows = position_rows(task)
    add("position", rows * e + (e if style.cls_token else 0), tokens * e,
        _table_bytes(rows, e, table) + (4 * e if style.cls_token else 0))
    if style.embedding_norm:
        add("norm", norm_params * e, 2 * tokens * e, 4 * norm_params * e)
    sized = task if task.patch_grid is not None or tokens == task.seq_len else replace(task, seq_len=tokens)
    layouts = [input_layout(sized), *layer_layouts(sized, arch)]
    for index, layer in enumerate(arch.layers):
        breakdown: dict[str, float] = {}
        if layouts[index + 1] != layouts[index] or not costs.stages:  # a stage starts where its tokens change
            costs.stages.append({"first_layer": index, "tokens": layouts[index + 1].tokens, "macs": 0,
                                 "weight_bytes": 0})
        for op, params, macs, nbytes, call in boundary_costs(arch, index, layouts, e):
            add(op, params, macs, nbytes, breakdown)
            if call:
                costs.by_op[f"calls:{op}"] += 1
        if layouts[index + 1].tokens != layouts[0].tokens:
            tokens = layouts[index + 1].tokens  # the stage's own; before any boundary, the input's as always
        previous, e = e, arch.width_of(index)
        if e != previous:  # the fp32 projection that joins layers of different widths
            add("linear@32", previous * e + e, tokens * previous * e, _linear_bytes(previous, e, 32), breakdown)
            costs.by_op["calls:linear@32"] += 1
        inner = layer.num_heads * space.head_dim
        bits = min(layer.bits, FULL_PRECISION)
        linear = f"linear@{bits}"
        mixer = mixer_of(layer.mixer)
        norms = 1 + int(mixer.sublayer or not style.norm_first)  # a layer without a mixer has no norm before it
        add("norm", norm_params * norms * e, norms * tokens * e, 4 * norm_params * norms * e, breakdown)
        for in_f, out_f, bias in _layer_linears(space, style, mixer, e, layer):
            add(linear, in_f * out_f + (out_f if bias else 0), tokens * in_f * out_f,
                _linear_bytes(in_f, out_f, bits, space.quant_block_size, bias), breakdown)
            costs.by_op[f"calls:{linear}"] += 1
        shape = MixerShape(tokens, inner, space.head_dim, e, space.local_window,
                           layouts[index + 1].tokens if unpadded_tokens(task) is not None else None)
        add(f"mixing:{layer.mixer}", mixer.params(layer.mixer, shape), mixer.macs(layer.mixer, shape),
            mixer.weight_bytes(layer.mixer, shape), breakdown)
        if style.qk_norm and mixer.projected:  # Qwen3's norms of each head's queries and keys
            add("norm", 2 * space.head_dim, 2 * tokens * inner, 4 * 2 * space.head_dim, breakdown)
        costs.by_op[f"calls:mixing:{layer.mixer}"] += 1
        add("activation", 0, tokens * layer.mlp_dim, 0, breakdown)
        costs.per_layer.append(breakdown)
    for stage in costs.stages:
        stage["macs"] = int(stage["macs"])
    if style.final_norm:
        add("norm", norm_params * e, 2 * tokens * e, 4 * norm_params * e)
    _head_costs(add, task, e, tokens, table)
    return costs


def _head_costs(add, task: TaskSpec, e: int, tokens: int, table_bits: int) -> None:
    """The head after the final norm: the pooler and the classifier, or a decoder's LM head on every token
    (tied to the token table, it holds no weight of its own: the artifact reads the table's)."""
    style, classes = task.style, task.num_classes
    if style.pooler:
        add("linear@32", e * e + e, e * e, _linear_bytes(e, e, 32))
    if style.causal:
        shared = style.tie_embeddings and table_bits >= FULL_PRECISION and 4 * e * classes >= SHARED_WEIGHT_BYTES
        add("linear@32", 0 if style.tie_embeddings else e * classes, tokens * e * classes,
            0 if shared else _linear_bytes(e, classes, 32, bias=False))
    else:
        add("linear@32", e * classes + classes, e * classes + tokens * e, _linear_bytes(e, classes, 32))


def _layer_linears(space: SearchSpace, style, mixer, width: int, layer) -> list[tuple[int, int, bool]]:
    """(inputs, outputs, bias) of a layer's Linears: its mixer's projections, then its MLP's (a gated MLP's
    gate too)."""
    inner = layer.num_heads * space.head_dim
    shapes = projection_shapes(mixer, width, inner, inner // style.heads_per_kv)
    biases = [style.out_bias if p == "out" else style.qkv_bias for p in mixer.projections]
    mlp = [(width, layer.mlp_dim)] * (2 if style.gated_mlp else 1) + [(layer.mlp_dim, width)]
    return ([(i, o, b) for (i, o), b in zip(shapes, biases, strict=True)]
            + [(i, o, style.mlp_bias) for i, o in mlp])


def kv_cache_bytes(space: SearchSpace, task: TaskSpec, arch: Arch, batch_size: int, context: int) -> int:
    """What a decoder's KV cache holds at `context` tokens (fp32 keys and values of every layer with
    attention; a `sliding` layer's keys past its window are kept too, as the artifact keeps them)."""
    if not task.style.causal:
        return 0
    heads = sum(layer.num_heads // task.style.heads_per_kv for layer in arch.layers if mixer_of(layer.mixer).sublayer)
    return 2 * batch_size * context * heads * space.head_dim * 4


def kv_read_bytes(space: SearchSpace, task: TaskSpec, arch: Arch, batch_size: int, context: int) -> int:
    """What one generated token at `context` reads of the cache: each layer's keys and values that its queries
    see (a `sliding` layer's last `local_window` + 1)."""
    if not task.style.causal:
        return 0
    seen = 0
    for layer in arch.layers:
        if mixer_of(layer.mixer).sublayer:
            keys = min(context, space.local_window + 1) if layer.mixer == "sliding" else context
            seen += keys * layer.num_heads // task.style.heads_per_kv
    return 2 * batch_size * seen * space.head_dim * 4


def cost_metrics(space: SearchSpace, task: TaskSpec, arch: Arch, target) -> dict[str, float]:
    """The study metrics the cost model gives, at `target`'s batch and sequence: params, bytes and MACs, and
    memory_mb (the artifact and, for a decoder, its KV cache at the target's context, in MiB)."""
    costs = arch_costs(space, task, arch, target.batch_size, target.seq_len)
    cache = kv_cache_bytes(space, task, arch, target.batch_size, decode_context(target, task)) if task.style.causal \
        else 0
    return {"params": costs.params, "bytes": costs.bytes, "macs": costs.macs,
            "memory_mb": (costs.bytes + cache) / 2**20}
