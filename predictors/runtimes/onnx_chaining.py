"""Part graphs chained into one ONNX model: each part's names prefixed, the weights of one subnet put in, the
parts joined by the names of their inputs and outputs (`chain`: a hidden state from part to part, and a padded
text's mask; `merged`, what a decoder's artifact joins by other names too). A weight equal to one already in the
model, from 64 KiB on (a decoder's LM head tied to its token table), is read from it, not stored twice."""

from __future__ import annotations

import hashlib

import numpy as np

INPUT, OUTPUT, MASK = "input", "logits", "mask"


def chain(parts: list, weights: list[dict[str, np.ndarray]]):
    """One model: each part's graph with its own names prefixed, holding `weights[i]`, fed by the
    previous part's output (and, in a padded text model, by the padding mask of the first part or of the
    last stage boundary's reduction, which pools it)."""
    from onnx import helper

    renames = []
    mask = MASK  # the padding mask the next part reads
    for i, part in enumerate(parts):
        graph = part.graph
        rename = {graph.input[0].name: INPUT if i == 0 else f"hidden{i}",
                  graph.output[0].name: OUTPUT if i == len(parts) - 1 else f"hidden{i + 1}"}
        rename.update({extra.name: mask for extra in graph.input[1:]})
        if len(graph.output) > 1:  # the stem's mask, or a reduction's pooled one
            mask = MASK if i == 0 else f"{MASK}{i}"
            rename[graph.output[1].name] = mask
        renames.append(rename)
    first, last = parts[0], parts[-1]
    source, sink = value_info(first.graph.input[0], INPUT), value_info(last.graph.output[0], OUTPUT)
    nodes, initializers = merged(parts, weights, renames)
    graph = helper.make_graph(nodes, "elastiq_subnet", [source], [sink], initializers)
    return helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version,
                             producer_name="elastiq")


def value_info(info, name: str):
    import onnx

    copied = onnx.ValueInfoProto()
    copied.CopyFrom(info)
    copied.name = name
    return copied


def merged(parts: list, weights: list[dict[str, np.ndarray]], renames: list[dict[str, str]]) -> tuple[list, list]:
    """The nodes and initializers of the part graphs as one graph's: part i's names prefixed with "pi/" except
    those `renames[i]` maps (its inputs and outputs, to the names that join the parts), its weights
    `weights[i]` put in; a weight equal to one stored already (a decoder's LM head tied to its token table) is
    read from it, not stored twice."""
    import onnx
    from onnx import numpy_helper

    nodes, initializers = [], []
    stored: dict[tuple, str] = {}  # a large weight's dtype, shape and digest -> its name in the model
    for i, (part, state, rename) in enumerate(zip(parts, weights, renames, strict=True)):
        graph = part.graph
        rename = {**rename, "": ""}

        def renamed(name: str, i=i, rename=rename) -> str:
            return rename.get(name, f"p{i}/{name}")

        found = set()
        shapes = {name: array.shape for name, array in state.items()}
        for tensor in graph.initializer:
            if tensor.name in state:
                found.add(tensor.name)
                array = state[tensor.name]
                same = _identity(array)
                if same is not None and same in stored:
                    rename[tensor.name] = stored[same]
                    continue
                if same is not None:
                    stored[same] = renamed(tensor.name)
                initializers.append(numpy_helper.from_array(array, renamed(tensor.name)))
            else:  # a constant of the graph (a mask of the sequence length): the same for every width
                copied = onnx.TensorProto()
                copied.CopyFrom(tensor)
                copied.name = renamed(tensor.name)
                initializers.append(copied)
        if found != set(state):
            raise ValueError(f"part {i}: weights {sorted(set(state) - found)[:3]} are not inputs of its graph")
        for node in graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                raise ValueError("a part's graph has a subgraph; chaining does not rename inside it")
            copied = onnx.NodeProto()
            copied.CopyFrom(node)
            del copied.metadata_props[:]  # the exporter's notes (stack traces, module paths): most of a small graph
            copied.doc_string = ""
            if node.op_type == "MatMulNBits":  # its widths are attributes: this build's, from its packed weights
                _set_nbits_widths(copied, shapes[node.input[1]])
            copied.name = f"p{i}/{node.name}"
            copied.input[:] = [renamed(n) for n in node.input]
            copied.output[:] = [renamed(n) for n in node.output]
            nodes.append(copied)
    return nodes, initializers


SHARED_WEIGHT_BYTES = 1 << 16  # weights from this size on are stored once where equal (smaller: not worth a hash)


def _identity(array: np.ndarray) -> tuple | None:
    """What tells a large weight from every other; None for a small one."""
    if array.nbytes < SHARED_WEIGHT_BYTES:
        return None
    return array.dtype.str, array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _set_nbits_widths(node, packed_shape: tuple[int, ...]) -> None:
    """K (inputs) and N (outputs) of a MatMulNBits node from its packed weights (N, blocks, block bytes)."""
    block_size = next(a.i for a in node.attribute if a.name == "block_size")
    for attribute in node.attribute:
        if attribute.name == "N":
            attribute.i = packed_shape[0]
        elif attribute.name == "K":
            attribute.i = packed_shape[1] * block_size
