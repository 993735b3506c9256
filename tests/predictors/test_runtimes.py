"""Runtimes: the artifacts they build compute what the subnet computes, with real int8 where asked."""

import numpy as np
import onnx
import pytest
import torch

from predictors.runtimes import RUNTIMES, ArtifactMismatch, Program, RuntimeUnavailable, runtime_named
from predictors.runtimes.aot_inductor import torch_lowered
from predictors.runtimes.base import check_agreement
from predictors.runtimes.onnx_lowering import onnx_lowered
from predictors.runtimes.onnx_runtime import OnnxRuntime
from predictors.target import HardwareTarget, fingerprint
from search_space import Arch, LayerArch
from supernet.model import Supernet
from supernet.quant import fake_quantize_weight
from tests.supernet.test_model import FEATURES, TOKENS


@pytest.fixture(scope="module")
def digits_supernet(digits_space):
    return Supernet(digits_space, FEATURES, seed=0).eval()


def _nodes(artifact: bytes, op_type: str) -> int:
    return sum(node.op_type == op_type for node in onnx.load_from_string(artifact).graph.node)


def test_onnx_artifact_runs_int8_kernels_only_where_the_policy_says(digits_supernet):
    arch = Arch(128, (LayerArch(8, 512, "softmax", 8), LayerArch(8, 512, "linear", 32)))
    subnet = digits_supernet.extract(arch)
    x = torch.randn(8, 16, 4, generator=torch.Generator().manual_seed(0))
    runtime = runtime_named("onnxruntime")
    artifact = runtime.build(subnet, x[:1])
    assert _nodes(artifact, "DynamicQuantizeMatMul") == 6  # q, k, v, out, fc1, fc2 of the 8-bit layer
    program = runtime.load(artifact, "cpu", 1)
    with torch.inference_mode():
        reference, actual = subnet(x), program(x)
    assert (actual - reference).abs().max() < 0.01 * reference.abs().max()
    assert torch.equal(actual.argmax(-1), reference.argmax(-1))
    assert program(x[:1]).shape == (1, 10) and program(x[:3]).shape == (3, 10)  # any batch size
    # sessions without spinning threads or the memory arena (what a benchmark tries) compute the same
    assert torch.equal(runtime.load(artifact, "cpu", 1, spinning=False, arena=False)(x), actual)


def test_int8_weights_are_the_fake_quantizers_integers(digits_supernet):
    arch = Arch(64, (LayerArch(2, 64, "softmax", 8),))
    block = onnx_lowered(digits_supernet.extract(arch)).blocks[0]
    original = digits_supernet.extract(arch).blocks[0].attention.query
    layer = block.attention.query
    assert layer.qweight.dtype == (torch.int8 if layer.signed_weights else torch.uint8)
    dequantized = layer.integers().t().float() * layer.scale[:, None]
    assert torch.allclose(dequantized, fake_quantize_weight(original.weight, 8), rtol=0, atol=1e-7)


@pytest.mark.parametrize("signed", [True, False])
def test_both_weight_formats_hold_the_same_integers_and_the_exact_one_is_chosen_here(digits_supernet, signed):
    """uint8 weights (a zero point of 128) where this CPU's int8 kernel saturates, int8 elsewhere: the
    same integers either way, and the artifact built here computes what the subnet computes."""
    from predictors.runtimes.onnx_lowering import DynamicInt8Linear, int8_kernel_saturates

    layer = digits_supernet.extract(Arch(64, (LayerArch(2, 64, "softmax", 8),))).blocks[0].attention.query
    stored = DynamicInt8Linear(layer, signed_weights=signed)
    assert torch.equal(stored.integers(), DynamicInt8Linear(layer, signed_weights=True).qweight.to(torch.int32))
    assert (stored.zero_point is None) == signed
    assert DynamicInt8Linear(layer).signed_weights == (not int8_kernel_saturates())


def test_one_graph_per_structure_serves_every_width(digits_space, digits_supernet):
    runtime = OnnxRuntime()
    x = torch.randn(4, 16, 4, generator=torch.Generator().manual_seed(1))
    graphs = []
    for embed_dim in digits_space.embed_dims:  # widths change, heads, attention and bits do not
        for mlp_dim in (embed_dim, 4 * embed_dim):
            arch = Arch(embed_dim, (LayerArch(2, mlp_dim, "local", 8), LayerArch(2, mlp_dim, "softmax", 32)))
            runtime.deploy(digits_supernet.extract(arch), x)  # checked against the subnet
            graphs.append(len(runtime._parts._graphs))
    assert graphs[-1] == graphs[0]  # the first build exported every part graph the others use


def test_a_head_width_of_its_own_gets_a_graph_of_its_own(digits_space):
    """The exporter writes a head's width into the reshapes to heads: two spaces alike but for head_dim share
    no part graph (a graph cached for one failed on the other's weights)."""
    from search_space import SearchSpace

    runtime, x = OnnxRuntime(), torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(0))
    for head_dim in (8, 16):
        space = SearchSpace.from_dict({"head_dim": head_dim, "embed_dim": [32], "depth": [1],
                                       "layer": {"num_heads": [2], "mlp_dim": [32], "mixer": ["softmax"], "bits": [32]}})
        runtime.deploy(Supernet(space, FEATURES, seed=0).eval().extract(space.largest()), x)  # checked on build


def test_token_inputs_build_too(digits_space):
    supernet = Supernet(digits_space, TOKENS, seed=0).eval()
    x = torch.randint(TOKENS.input_dim, (3, TOKENS.seq_len), generator=torch.Generator().manual_seed(0))
    program = runtime_named("onnxruntime").deploy(supernet.extract(digits_space.smallest()), x)
    assert program(x).shape == (3, TOKENS.num_classes)


def test_an_artifact_that_computes_something_else_is_refused(digits_space, digits_supernet):
    subnet = digits_supernet.extract(digits_space.smallest())
    x = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(0))

    class Off(Program):
        def __call__(self, inputs):
            return subnet(inputs) + 1.0

    with pytest.raises(ArtifactMismatch, match="does not compute"):
        check_agreement(Off(), subnet, x, "fake")


def test_torch_int8_form_computes_the_fake_quantized_model(digits_supernet):
    arch = Arch(96, (LayerArch(4, 384, "softmax", 8), LayerArch(2, 96, "linear", 8)))
    subnet = digits_supernet.extract(arch)
    lowered = torch_lowered(subnet)
    assert sum(type(m).__name__ == "Int8MatMulLinear" for m in lowered.modules()) == 12
    x = torch.randn(5, 16, 4, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        reference, actual = subnet(x), lowered(x)
    assert (actual - reference).abs().max() < 0.01 * reference.abs().max()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_int8_layers_in_cublas_layout_compute_the_same_sums(device):
    """CUDA's int8 product takes more than 16 rows and sizes that are multiples of 8: the layer pads
    them and slices the padding away. Its numbers are those of the CPU layout, for any rows and sizes
    (the padding's arithmetic is checked on the CPU too, whose kernel takes both layouts)."""
    from predictors.runtimes.aot_inductor import Int8MatMulLinear
    from supernet.quant import QuantLinear

    generator = torch.Generator().manual_seed(0)
    for in_features, out_features in ((12, 10), (64, 96), (5, 3)):
        layer = QuantLinear(in_features, out_features, True, 8)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(out_features, in_features, generator=generator))
        plain = Int8MatMulLinear(layer, cublas_layout=False)
        # on CUDA the layout follows the layer's device; on the CPU it is asked for
        padded = Int8MatMulLinear(layer.to(device)) if device == "cuda" else Int8MatMulLinear(layer, cublas_layout=True)
        assert padded.for_cuda
        for rows in (1, 16, 17, 40):
            x = torch.randn(rows, in_features, generator=generator)
            with torch.inference_mode():
                expected, got = plain(x), padded(x.to(device)).cpu()
            assert got.shape == (rows, out_features)
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.slow
def test_an_aotinductor_cuda_artifact_is_built_from_a_subnet_on_the_cpu(digits_supernet):
    """A CUDA target compiles for the GPU whatever device the subnet lives on, runs batches of one
    image (16 rows of int8 products), and takes and gives back batches from the CPU."""
    arch = Arch(64, (LayerArch(2, 128, "softmax", 8), LayerArch(4, 64, "local", 8)))
    subnet = digits_supernet.extract(arch)
    x = torch.randn(4, 16, 4, generator=torch.Generator().manual_seed(0))
    program = HardwareTarget("g", device="cuda").deploy(subnet, x[:1])  # checked against the subnet
    assert program.device.type == "cuda" and program(x[:1]).device.type == "cpu"
    check_agreement(program, subnet, x, "aotinductor")
    assert program(x.cuda()).device.type == "cuda"


def test_runtime_is_part_of_the_target_and_its_fingerprint():
    default, compiled = HardwareTarget("a"), HardwareTarget("a", runtime="aotinductor")
    assert default.runtime == "onnxruntime" and HardwareTarget("g", device="cuda").runtime == "aotinductor"
    assert default.key != compiled.key and default.measured_on != compiled.measured_on
    assert default.measured_on.startswith("onnxruntime-") and "CPUExecutionProvider" in default.measured_on
    print_ = fingerprint(HardwareTarget("t", threads=2))
    assert print_["runtime"] == "onnxruntime" and print_["intra_op_threads"] == 2 and print_["runtime_version"]
    assert set(RUNTIMES) >= {"onnxruntime", "aotinductor"}


def test_bad_runtimes_are_refused(monkeypatch):
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorrt'"):
        HardwareTarget(runtime="tensorrt")
    with pytest.raises(RuntimeUnavailable, match="cannot run on device 'cuda'"):
        HardwareTarget(device="cuda", runtime="onnxruntime")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RuntimeUnavailable, match="needs the onnxruntime package"):
        HardwareTarget()


@pytest.mark.slow
def test_aotinductor_compiles_real_int8(digits_supernet):
    """The second runtime end to end: 10-40 s to compile one model here."""
    arch = Arch(64, (LayerArch(2, 128, "softmax", 8),))
    subnet = digits_supernet.extract(arch)
    x = torch.randn(4, 16, 4, generator=torch.Generator().manual_seed(0))
    runtime = runtime_named("aotinductor")
    program = runtime.deploy(subnet, x)  # checked against the subnet
    assert program(x[:1]).shape == (1, 10)
    again = runtime.load(runtime.build(subnet, x[:1]), "cpu", 1)
    with torch.inference_mode():
        assert torch.allclose(again(x), program(x))


def test_part_graphs_are_exported_once_then_read_from_the_cache(digits_space, digits_supernet, monkeypatch,
                                                                tmp_path):
    from predictors.runtimes import onnx_runtime

    monkeypatch.setenv("ELASTIQ_CACHE_DIR", str(tmp_path))
    x = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(0))
    subnet = digits_supernet.extract(digits_space.smallest())
    fresh = onnx_runtime.PartGraphs()
    monkeypatch.setattr(OnnxRuntime, "_parts", fresh)
    OnnxRuntime().deploy(subnet, x)
    cached = list((tmp_path / "onnx-parts").glob("*.onnx"))
    assert len(cached) == 3  # stem, one block, head
    for path in cached:  # a graph holds no weights: they are the subnet's, put in at each build
        graph = onnx.load(str(path)).graph
        assert all(np.prod(t.dims) == 0 for t in graph.initializer if t.name.endswith("weight"))

    def never(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "_export_graph", never)
    monkeypatch.setattr(OnnxRuntime, "_parts", onnx_runtime.PartGraphs())  # a new process, the same disk
    OnnxRuntime().deploy(subnet, x)
    cached[0].write_bytes(b"damaged")
    with pytest.raises(AssertionError, match="exported again"):  # a damaged file is exported again, not read
        monkeypatch.setattr(OnnxRuntime, "_parts", onnx_runtime.PartGraphs())
        OnnxRuntime().deploy(subnet, x)


def test_4_bit_layers_run_matmulnbits_with_half_a_byte_per_weight_and_tables_are_int8():
    """A 4-bit and a 2-bit layer become MatMulNBits (packed codes, a scale per block); the token table
    is stored int8 and gathered as such; the artifact computes what the subnet computes."""
    from onnx import numpy_helper

    from search_space import SearchSpace

    space = SearchSpace.from_dict({"head_dim": 16, "embed_dim": [64], "depth": [3], "layer": {
        "num_heads": [4], "mlp_dim": [128], "attention": ["softmax"], "bits": [32, 8, 4, 2]}})
    assert space.quantize_embeddings  # the default where layers may be quantized
    subnet = Supernet(space, TOKENS, seed=0).extract(
        Arch(64, (LayerArch(4, 128, "softmax", 4), LayerArch(4, 128, "softmax", 2), LayerArch(4, 128, "softmax", 8))))
    x = torch.randint(TOKENS.input_dim, (8, TOKENS.seq_len), generator=torch.Generator().manual_seed(0))
    runtime = runtime_named("onnxruntime")
    artifact = runtime.build(subnet, x[:1])
    graph = onnx.load_from_string(artifact).graph
    nbits = [node for node in graph.node if node.op_type == "MatMulNBits"]
    assert len(nbits) == 12 and _nodes(artifact, "DynamicQuantizeMatMul") == 6
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in nbits:
        attributes = {a.name: a.i for a in node.attribute}
        packed = weights[node.input[1]]
        assert packed.dtype == np.uint8 and packed.size * 8 == attributes["K"] * attributes["N"] * attributes["bits"]
    tables = [weights[node.input[0]] for node in graph.node if node.op_type == "Gather"
              and node.input[0] in weights and weights[node.input[0]].ndim == 2]
    assert any(t.dtype == np.int8 and t.shape == (TOKENS.input_dim, 64) for t in tables)
    check_agreement(runtime.load(artifact, "cpu", 1), subnet, x, runtime.name)


def test_a_runtime_refuses_bit_widths_it_has_no_kernel_for(digits_supernet):
    runtime_named("onnxruntime").require_bits((32, 8, 4, 2))
    with pytest.raises(RuntimeUnavailable, match="cannot run 4-bit layers"):
        runtime_named("aotinductor").require_bits((32, 8, 4))
    subnet = digits_supernet.extract(Arch(64, (LayerArch(2, 64, "softmax", 8),)))
    subnet.blocks[0].mlp.fc1.bits = 4
    with pytest.raises(RuntimeUnavailable, match="cannot run 4-bit layers"):
        torch_lowered(subnet)
