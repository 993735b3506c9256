"""One encoder layer at each bit width on ONNX Runtime: latency and bytes.

For one layer of MiniLM's size (384 wide, 12 heads of 32, MLP 1536, 32 tokens)
and one of the digits space's widest (128 wide, 8 heads of 16, MLP 512, 16
tokens), the layer's artifact as elastiq builds it (its part graph, with the
weights of a seeded supernet) at:

- 32 bits (fp32 MatMul),
- 8 bits dynamic (DynamicQuantizeMatMul, activations' range taken per call),
- 8 bits static: the same int8 weights, activations quantized with a range
  calibrated once on 64 seeded inputs (QuantizeLinear / DequantizeLinear
  around each MatMul, which ONNX Runtime fuses into QuantizeLinear +
  MatMulIntegerToFloat). Built
  here by rewriting the dynamic graph: elastiq does not ship it (see the
  README: it was not faster),
- 4 bits (MatMulNBits, blocks of 32, accuracy level 4, elastiq's form) and 4
  bits at accuracy level 0 (fp32 activations), for the choice of level.

Each is timed at batch 1 and 32, one thread, in seeded interleaved rounds;
the medians are printed with the artifact's bytes, and written as JSON.

    .venv/bin/python bench/latency/quantized_layers.py [--rounds 30] [--out bench/results/quantized_layers.json]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from bench.common import timed, timing_arguments
from predictors.runtimes import runtime_named
from predictors.runtimes.onnx_chaining import chain
from predictors.runtimes.onnx_lowering import onnx_lowered
from predictors.runtimes.onnx_runtime import _export_graph
from search_space import Arch, LayerArch, SearchSpace
from supernet.model import Supernet
from supernet.task_spec import TaskSpec

LAYERS = {  # name: (embed, heads, head_dim, mlp, tokens)
    "minilm": (384, 12, 32, 1536, 32),
    "digits": (128, 8, 16, 512, 16),
}


def layer_artifact(embed: int, heads: int, head_dim: int, mlp: int, tokens: int, bits: int) -> bytes:
    """The artifact of one encoder layer (pre-LN) at `bits`, as elastiq's part graphs build it."""
    space = SearchSpace.from_dict({"head_dim": head_dim, "embed_dim": [embed], "depth": [1], "layer": {
        "num_heads": [heads], "mlp_dim": [mlp], "mixer": ["softmax"], "bits": [32, 8, 4]}})
    task = TaskSpec("features", input_dim=4, seq_len=tokens, num_classes=2)
    block = Supernet(space, task, seed=0).extract(Arch(embed, (LayerArch(heads, mlp, "softmax", bits),))).blocks[0]
    example = (torch.zeros(1, tokens, embed),)
    form = onnx_lowered(block)
    graph = _export_graph(form, example)
    weights = {name: tensor.detach().numpy() for name, tensor in form.state_dict().items()}
    return chain([graph], [weights]).SerializeToString()


def with_accuracy_level(artifact: bytes, level: int) -> bytes:
    model = onnx.load_from_string(artifact)
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = level
    return model.SerializeToString()


def static_int8(artifact: bytes, calibration: np.ndarray) -> bytes:
    """The dynamic int8 graph with each DynamicQuantizeMatMul's input range fixed by calibration."""
    import onnxruntime

    model = onnx.load_from_string(artifact)
    nodes = [n for n in model.graph.node if n.op_type == "DynamicQuantizeMatMul"]
    probe = onnx.load_from_string(artifact)
    probe.graph.output.extend(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None) for n in nodes)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: calibration})[1:]
    weights = {t.name: t for t in model.graph.initializer}
    rewritten = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeMatMul":
            rewritten.append(node)
            continue
        values = outputs[nodes.index(node)]
        low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        scale = max(high - low, 1e-8) / 255
        x, w, w_scale, w_zero, bias = (list(node.input) + [""] * 5)[:5]
        tag = node.name.replace("/", "_")
        extra = [numpy_helper.from_array(np.array(scale, np.float32), f"{tag}_as"),
                 numpy_helper.from_array(np.array(round(-low / scale), np.uint8), f"{tag}_az")]
        if not w_zero:
            dtype = numpy_helper.to_array(weights[w]).dtype
            extra.append(numpy_helper.from_array(np.zeros(numpy_helper.to_array(weights[w_scale]).shape, dtype),
                                                 f"{tag}_wz"))
            w_zero = f"{tag}_wz"
        model.graph.initializer.extend(extra)
        rewritten += [helper.make_node("QuantizeLinear", [x, f"{tag}_as", f"{tag}_az"], [f"{tag}_xq"]),
                      helper.make_node("DequantizeLinear", [f"{tag}_xq", f"{tag}_as", f"{tag}_az"], [f"{tag}_xd"]),
                      helper.make_node("DequantizeLinear", [w, w_scale, w_zero], [f"{tag}_wd"], axis=1),
                      helper.make_node("MatMul", [f"{tag}_xd", f"{tag}_wd"],
                                       [f"{tag}_y" if bias else node.output[0]])]
        if bias:
            rewritten.append(helper.make_node("Add", [f"{tag}_y", bias], [node.output[0]]))
    del model.graph.node[:]
    model.graph.node.extend(rewritten)
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    args = timing_arguments(__doc__.splitlines()[0], 30, "bench/results/quantized_layers.json", argv)
    if args is None:
        return 2
    runtime, rng = runtime_named("onnxruntime"), np.random.default_rng(0)
    results = {}
    for name, (embed, heads, head_dim, mlp, tokens) in LAYERS.items():
        calibration = rng.standard_normal((64, tokens, embed)).astype(np.float32)
        dynamic = layer_artifact(embed, heads, head_dim, mlp, tokens, 8)
        four = layer_artifact(embed, heads, head_dim, mlp, tokens, 4)
        forms = {"32": layer_artifact(embed, heads, head_dim, mlp, tokens, 32), "8 dynamic": dynamic,
                 "8 static": static_int8(dynamic, calibration), "4 (level 4)": four,
                 "4 (level 0)": with_accuracy_level(four, 0)}
        programs = {form: runtime.load(artifact, "cpu", 1) for form, artifact in forms.items()}
        for batch in (1, 32):
            x = torch.from_numpy(rng.standard_normal((batch, tokens, embed)).astype(np.float32))
            medians = timed(programs, x, args.rounds, rng)
            for form, median in medians.items():
                results[f"{name} b{batch} {form}"] = {"layer": name, "batch": batch, "form": form, "ms": median,
                                                      "bytes": len(forms[form])}
                print(f"{name:7s} b{batch:<3d} {form:12s} {median:8.3f} ms  {len(forms[form]):>10,} bytes  "
                      f"{median / medians['32']:.2f}x fp32")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
