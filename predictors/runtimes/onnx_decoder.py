"""A decoder LM's ONNX Runtime artifact with a KV cache: `supernet.kv_cache.DecoderStep` as one graph, in the
input and output names of ONNX Runtime GenAI and Optimum (`input_ids`, `attention_mask`, `position_ids`,
`past_key_values.N.key/value` -> `logits`, `present.N.key/value`), its batch, new tokens and past tokens
dynamic.

As the encoder's artifact (`onnx_runtime`), it is built from part graphs exported once per structure and
chained, each holding the subnet's weights: the stem (ids and positions to token vectors), each block (token
vectors, the mask, the positions and its layer's cache to token vectors and its present cache; a block
without attention has no cache), and the LM head. So a latency dataset of many archs exports a handful of
graphs, not one model per arch.

The program measures what a target counts for a decoder: one generated token at the target's context, the
cache holding `context - 1` tokens (`DecoderProgram.runner`). Called on a batch of tokens as a model is, it
runs them as a prefill from an empty cache and returns their logits, so the build is checked against the
subnet as every artifact is.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from predictors.runtimes.base import DECODER_ARTIFACTS, Program, check_agreement
from predictors.runtimes.onnx_chaining import merged, value_info
from predictors.runtimes.onnx_lowering import int8_weight_type, onnx_lowered
from predictors.runtimes.onnx_runtime import OnnxRuntime, session_options, without_weights
from supernet.kv_cache import CacheLayout, cache_layout, cached_block
from supernet.subnet import graph_settings

INPUTS = ("input_ids", "attention_mask", "position_ids")
# what each dimension of the model's inputs and outputs is called (Optimum's names)
DIMENSIONS = {"input_ids": ("batch_size", "sequence_length"), "position_ids": ("batch_size", "sequence_length"),
              "attention_mask": ("batch_size", "total_sequence_length"),
              "logits": ("batch_size", "sequence_length", "vocab_size")}
_BATCH, _NEW, _PAST = 2, 2, 3  # an export's example sizes: none 0 or 1, which the exporter would fix


class _Stem(nn.Module):
    def __init__(self, stem: nn.Module):
        super().__init__()
        self.stem = stem

    def forward(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        return self.stem(input_ids, position_ids)


class _CachedBlock(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, hidden: Tensor, attention_mask: Tensor, position_ids: Tensor, past_key: Tensor,
                past_value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return cached_block(self.block, hidden, attention_mask.bool(), position_ids, past_key, past_value)


# each part's inputs and outputs: what chaining joins them by
_ROLES = {"stem": (("input_ids", "position_ids"), ("hidden_out",)),
          "cached": (("hidden", "attention_mask", "position_ids", "past_key", "past_value"),
                     ("hidden_out", "present_key", "present_value")),
          "block": (("hidden",), ("hidden_out",)), "head": (("hidden",), ("logits",))}


def _parts(subnet: nn.Module, width: int, vocab_size: int) -> list[tuple[str, nn.Module, tuple[Tensor, ...]]]:
    """(role, module, example inputs) of each part of the decoding step, in the order they run."""
    hidden = torch.zeros(_BATCH, _NEW, width)
    mask = torch.ones(_BATCH, _PAST + _NEW, dtype=torch.long)
    positions = torch.arange(_PAST, _PAST + _NEW)[None].expand(_BATCH, -1).contiguous()
    parts = [("stem", _Stem(subnet.stem), (torch.zeros(_BATCH, _NEW, dtype=torch.long) % vocab_size, positions))]
    for block in subnet.blocks:
        if block.attention is None:
            parts.append(("block", block, (hidden,)))
            continue
        attention = block.attention
        cache = torch.zeros(_BATCH, attention.layout.kv_heads(attention.num_heads), _PAST, attention.head_dim)
        # two tensors: one passed twice would be one input of the graph
        parts.append(("cached", _CachedBlock(block), (hidden, mask, positions, cache, cache.clone())))
    return [*parts, ("head", subnet.head, (hidden,))]


def _export(role: str):
    names_in, names_out = _ROLES[role]
    dynamic = torch.export.Dim.DYNAMIC

    def export(lowered: nn.Module, example: tuple[Tensor, ...]):
        shapes = tuple({0: dynamic, 2: dynamic} if name.startswith("past") else {0: dynamic, 1: dynamic}
                       for name in names_in)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on torchvision and on tracing
            program = torch.onnx.export(lowered, example, dynamo=True, optimize=False, verbose=False,
                                        input_names=list(names_in), output_names=list(names_out),
                                        dynamic_shapes=shapes)
        return without_weights(program.model_proto, lowered)
    return export


def _structure(role: str, part: nn.Module) -> tuple:
    return ("decoder", 3, role, _ROLES[role], int8_weight_type()) + tuple(
        (name, type(m).__name__, graph_settings(m)) for name, m in part.named_modules())


def build_decoder(subnet: nn.Module) -> bytes:
    """The artifact of `subnet`'s decoding step (see the module)."""
    from onnx import helper

    layout = cache_layout(subnet)
    past_names, present_names = layout.names()
    width = subnet.head.norm.weight.shape[0] if subnet.head.norm is not None else subnet.head.classifier.in_features
    graphs, weights, renames = [], [], []
    inputs, outputs, cached = {}, {}, 0
    with torch.no_grad():
        for i, (role, part, example) in enumerate(_parts(subnet, width, subnet.head.classifier.out_features)):
            lowered = onnx_lowered(part)
            graph = OnnxRuntime._parts.graph(lowered, example, _structure(role, part), _export(role))
            names_in, names_out = _ROLES[role]
            joined = {"hidden": (f"hidden{i}", None), "hidden_out": (None, f"hidden{i + 1}")}
            if role == "cached":  # its layer's cache: the next of the model's
                joined |= {"past_key": (past_names[2 * cached], None), "past_value": (past_names[2 * cached + 1], None),
                           "present_key": (None, present_names[2 * cached]),
                           "present_value": (None, present_names[2 * cached + 1])}
            rename = {}
            for info in graph.graph.input:  # an input the part does not read (a rotary stem's positions) is gone
                rename[info.name] = joined[info.name][0] if info.name in joined else info.name
                if rename[info.name] in (*INPUTS, *past_names):
                    inputs[rename[info.name]] = value_info(info, rename[info.name])
            for info in graph.graph.output:
                rename[info.name] = joined[info.name][1] if info.name in joined else info.name
                if rename[info.name] in ("logits", *present_names):
                    outputs[rename[info.name]] = value_info(info, rename[info.name])
            cached += role == "cached"
            graphs.append(graph)
            weights.append({name: tensor.detach().numpy() for name, tensor in lowered.state_dict().items()})
            renames.append(rename)
    nodes, initializers = merged(graphs, weights, renames)
    order = [name for name in (*INPUTS, *past_names) if name in inputs]
    graph = helper.make_graph(nodes, "elastiq_decoder", [_named_dims(inputs[n], layout) for n in order],
                              [_named_dims(outputs[n], layout) for n in ("logits", *present_names)], initializers)
    first = graphs[0]
    return helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version,
                             producer_name="elastiq").SerializeToString()


def _named_dims(info, layout: CacheLayout):
    """`info` with its dimensions named as Optimum names them, its fixed ones (heads, widths) kept."""
    names = DIMENSIONS.get(info.name) or ("batch_size", "num_heads", "past_sequence_length" if info.name.startswith(
        "past") else "total_sequence_length", "head_dim")
    for dim, name in zip(info.type.tensor_type.shape.dim, names, strict=True):
        if not dim.HasField("dim_value"):
            dim.dim_param = name
    return info


class DecoderProgram(Program):
    """A loaded decoder artifact: `step` runs its graph on named inputs; called on tokens, a prefill from an
    empty cache (their logits); timed, one generated token at `context` (`runner`)."""

    def __init__(self, session, layout: CacheLayout, context: int):
        self.session, self.layout, self.context = session, layout, context
        self.inputs = [i.name for i in session.get_inputs()]

    def step(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, *past: Tensor
             ) -> tuple[Tensor, ...]:
        return tuple(torch.from_numpy(out) for out in self.session.run(None, self._feed(
            input_ids.numpy(), attention_mask.numpy(), position_ids.numpy(), [p.numpy() for p in past])))

    def _feed(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]) -> dict:
        values = {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                  **dict(zip(self.layout.names()[0], past, strict=True))}
        return {name: values[name] for name in self.inputs}

    def __call__(self, inputs: Tensor) -> Tensor:
        batch, tokens = inputs.shape
        positions = torch.arange(tokens)[None].expand(batch, -1).contiguous()
        return self.step(inputs, torch.ones(batch, tokens, dtype=torch.long), positions,
                         *self.layout.empty(batch, 0))[0]

    def runner(self, inputs: Tensor):
        """One generated token for each of `inputs`' rows (its last token the new one) at `context`."""
        batch = inputs.shape[0]
        past = [p.numpy() for p in self.layout.empty(batch, self.context - 1)]
        feed = self._feed(inputs[:, -1:].numpy(), np.ones((batch, self.context), np.int64),
                          np.full((batch, 1), self.context - 1, np.int64), past)
        return lambda: self.session.run(None, feed)


def deploy_decoder(subnet: nn.Module, example: Tensor, context: int, threads: int = 1) -> DecoderProgram:
    """The decoder artifact of `subnet`, loaded, checked on `example` (a prefill) against the subnet."""
    import onnxruntime

    session = onnxruntime.InferenceSession(build_decoder(subnet), session_options(threads),
                                           providers=[OnnxRuntime.provider])
    program = DecoderProgram(session, cache_layout(subnet), context)
    check_agreement(program, subnet, example, "onnxruntime decoder")
    return program


DECODER_ARTIFACTS[OnnxRuntime.name] = deploy_decoder
