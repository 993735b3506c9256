"""One encoder layer per token mixer on ONNX Runtime, and the Fourier transform's two forms.

1. The artifact of one pre-LN layer (128 wide, 4 heads of 32, MLP 512, fp32), as elastiq's part
   graphs build it, for each mixer: softmax, linear, local (window 4), fourier, and conv at kernel
   sizes 3, 7, 15 and 31; at 32, 128 and 512 tokens, batch 1 and 32.
2. The Fourier mixing alone (real part of the 2-D DFT over tokens and 128 features) in the form
   elastiq ships (four matrix products with fixed cosine and sine matrices) and through ONNX
   Runtime's `DFT` operator (a DFT over the features, then over the tokens, the real part kept),
   both checked against `torch.fft.fft2` first.

Everything runs on one thread, timed in seeded interleaved rounds (each sample the mean of 5
calls after a warm one); medians are printed and written as JSON, with each time's ratio to
softmax's (1) or to the matrix form's (2).

    .venv/bin/python bench/latency/token_mixers.py [--rounds 15] [--out bench/results/token_mixers.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.common import timed, timing_arguments
from predictors.runtimes import runtime_named
from predictors.runtimes.onnx_chaining import chain
from predictors.runtimes.onnx_lowering import onnx_lowered
from predictors.runtimes.onnx_runtime import _export_graph
from search_space import Arch, LayerArch, SearchSpace
from supernet.mixers.fourier import _dft
from supernet.model import Supernet
from supernet.task_spec import TaskSpec

EMBED, HEADS, HEAD_DIM, MLP, WINDOW = 128, 4, 32, 512, 4
MIXERS = ("softmax", "linear", "local", "fourier", "conv3", "conv7", "conv15", "conv31")
TOKENS = (32, 128, 512)
BATCHES = (1, 32)


def layer_artifact(mixer: str, tokens: int) -> bytes:
    """The artifact of one encoder layer with `mixer`, as elastiq's part graphs build it."""
    space = SearchSpace.from_dict({"head_dim": HEAD_DIM, "local_window": WINDOW, "embed_dim": [EMBED], "depth": [1],
                                   "layer": {"num_heads": [HEADS], "mlp_dim": [MLP], "mixer": [mixer],
                                             "bits": [32]}})
    task = TaskSpec("features", input_dim=4, seq_len=tokens, num_classes=2)
    block = Supernet(space, task, seed=0).extract(Arch(EMBED, (LayerArch(HEADS, MLP, mixer, 32),))).blocks[0]
    form = onnx_lowered(block.eval())
    graph = _export_graph(form, (torch.zeros(1, tokens, EMBED),))
    weights = {name: tensor.detach().numpy() for name, tensor in form.state_dict().items()}
    return chain([graph], [weights]).SerializeToString()


def _model(nodes: list, initializers: list, tokens: int) -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", tokens, EMBED])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", tokens, EMBED])
    graph = helper.make_graph(nodes, "fourier", [x], [y], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def fourier_matmul(tokens: int) -> bytes:
    """Re(F_T X F_D) = C_T (X C_D) - S_T (X S_D): elastiq's form."""
    token_cos, token_sin = (t.numpy() for t in _dft(tokens, "cpu", torch.float32))
    feature_cos, feature_sin = (t.numpy() for t in _dft(EMBED, "cpu", torch.float32))
    constants = {"ct": token_cos, "st": token_sin, "cd": feature_cos, "sd": feature_sin}
    nodes = [helper.make_node("MatMul", ["input", "cd"], ["a"]), helper.make_node("MatMul", ["input", "sd"], ["b"]),
             helper.make_node("MatMul", ["ct", "a"], ["ca"]), helper.make_node("MatMul", ["st", "b"], ["sb"]),
             helper.make_node("Sub", ["ca", "sb"], ["logits"])]
    return _model(nodes, [numpy_helper.from_array(v, k) for k, v in constants.items()], tokens)


def fourier_dft(tokens: int) -> bytes:
    """ONNX Runtime's DFT over the features (real input), then over the tokens; the real part, scaled."""
    constants = {"last": np.array([-1], np.int64), "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
                 "scale": np.array((tokens * EMBED) ** -0.5, np.float32)}
    nodes = [helper.make_node("Unsqueeze", ["input", "last"], ["real"]),
             helper.make_node("DFT", ["real"], ["over_features"], axis=2, onesided=0),
             helper.make_node("DFT", ["over_features"], ["both"], axis=1, onesided=0),
             helper.make_node("Slice", ["both", "zero", "one", "last"], ["real_part"]),
             helper.make_node("Squeeze", ["real_part", "last"], ["unscaled"]),
             helper.make_node("Mul", ["unscaled", "scale"], ["logits"])]
    return _model(nodes, [numpy_helper.from_array(v, k) for k, v in constants.items()], tokens)


def main(argv: list[str] | None = None) -> int:
    args = timing_arguments(__doc__.splitlines()[0], 15, "bench/results/token_mixers.json", argv)
    if args is None:
        return 2
    runtime, rng = runtime_named("onnxruntime"), np.random.default_rng(0)
    layers, fourier = [], []
    for tokens in TOKENS:
        programs = {mixer: runtime.load(layer_artifact(mixer, tokens), "cpu", 1) for mixer in MIXERS}
        forms = {"matmul": runtime.load(fourier_matmul(tokens), "cpu", 1),
                 "dft": runtime.load(fourier_dft(tokens), "cpu", 1)}
        check = torch.from_numpy(rng.standard_normal((2, tokens, EMBED)).astype(np.float32))
        expected = torch.fft.fft2(check.double()).real.float() * (tokens * EMBED) ** -0.5
        for name, program in forms.items():
            error = float((program(check) - expected).abs().max())
            if error > 1e-3:
                print(f"elastiq: error: the {name} form of the DFT is off by {error:.2e}", file=sys.stderr)
                return 1
        for batch in BATCHES:
            x = torch.from_numpy(rng.standard_normal((batch, tokens, EMBED)).astype(np.float32))
            medians = timed(programs, x, args.rounds, rng)
            for mixer, ms in medians.items():
                layers.append({"mixer": mixer, "tokens": tokens, "batch": batch, "ms": ms,
                               "vs_softmax": ms / medians["softmax"]})
                print(f"layer   T={tokens:<4d} b{batch:<3d} {mixer:8s} {ms:9.3f} ms  "
                      f"{ms / medians['softmax']:5.2f}x softmax")
            medians = timed(forms, x, args.rounds, rng)
            fourier.append({"tokens": tokens, "batch": batch, "matmul_ms": medians["matmul"],
                            "dft_ms": medians["dft"], "dft_over_matmul": medians["dft"] / medians["matmul"]})
            print(f"fourier T={tokens:<4d} b{batch:<3d} matmul {medians['matmul']:8.3f} ms  "
                  f"DFT {medians['dft']:8.3f} ms"
                  f"  ({medians['dft'] / medians['matmul']:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"layer": {"embed": EMBED, "heads": HEADS, "head_dim": HEAD_DIM, "mlp": MLP,
                                                    "window": WINDOW, "bits": 32},
                                          "layers": layers, "fourier_forms": fourier}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
