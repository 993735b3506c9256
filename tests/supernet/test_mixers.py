"""FlexiBERT's choices: the Fourier and convolution mixers, and a hidden size per layer, through the
supernet, extraction, one-pass multi-arch training and the ONNX Runtime artifact."""

import dataclasses

import numpy as np
import pytest
import torch

from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import Arch, LayerArch, SearchSpace
from supernet.mixers.conv import centre
from supernet.mixers.fourier import feature_dft, fourier_mix
from supernet.model import Supernet
from supernet.task_spec import ModelStyle, TaskSpec
from supernet.training.multi_arch import forward_parts

MIXERS = ["softmax", "linear", "fourier", "conv3", "conv5"]
SPACE = SearchSpace.from_dict({"name": "flexi", "head_dim": 8, "embed_dim": [16, 32], "depth": [1, 2, 3],
                               "layer": {"num_heads": [1, 2], "mlp_ratio": [1, 2], "attention": MIXERS,
                                         "bits": [32, 8], "width": [16, 24, 32]}})
SAME_WIDTH = dataclasses.replace(SPACE, layers=tuple(dataclasses.replace(c, width=None) for c in SPACE.layers))
FEATURES = TaskSpec("features", input_dim=4, seq_len=12, num_classes=3)
TEXT = TaskSpec("text", input_dim=30, seq_len=12, num_classes=3, style=ModelStyle(pad_token_id=0))


def _inputs(task: TaskSpec, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if task.input_kind == "features":
        return torch.randn(batch, task.seq_len, task.input_dim, generator=g)
    ids = torch.randint(1, task.input_dim, (batch, task.seq_len), generator=g)
    for row, length in enumerate(torch.randint(3, task.seq_len + 1, (batch,), generator=g).tolist()):
        ids[row, length:] = 0  # padded, at uneven lengths
    return torch.stack([ids, torch.zeros_like(ids)], dim=-1)


@pytest.fixture(scope="module")
def supernets():
    made = {}
    for task in (FEATURES, TEXT):
        model = Supernet(SPACE, task, seed=1)
        with torch.no_grad():  # non-trivial joins, biases and norms, so that slicing mistakes show
            g = torch.Generator().manual_seed(2)
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        made[task.input_kind] = model.eval()
    return made


def test_fourier_is_the_orthonormal_dft_over_each_texts_own_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 8, generator=g)
    mixed = fourier_mix(x, None, *feature_dft(8, x.device, x.dtype))
    torch.testing.assert_close(mixed, torch.fft.fft2(x.double()).real.float() / (10 * 8) ** 0.5, atol=1e-5, rtol=0)
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6], [1]])
    padded = fourier_mix(x * mask[..., None], mask, *feature_dft(8, x.device, x.dtype))
    for row, length in enumerate((10, 6, 1)):
        alone = torch.fft.fft2(x[row, :length].double()).real.float() / (length * 8) ** 0.5
        torch.testing.assert_close(padded[row, :length], alone, atol=1e-5, rtol=0)
        assert padded[row, length:].abs().sum() == 0


def test_every_conv_kernel_is_the_centre_of_the_largest(supernets):
    attention = supernets["features"].blocks[0].attention
    assert attention.conv_weight.shape == (2 * 8, 5)
    assert torch.equal(centre(attention.conv_weight, 8, 3), attention.conv_weight[:8, 1:4])
    assert torch.equal(centre(attention.conv_weight, 16, 5), attention.conv_weight)
    plain = Supernet(SAME_WIDTH.__class__.from_dict({**SAME_WIDTH.to_dict(), "layers": [
        {**c.to_dict(), "mixer": ["softmax"]} for c in SAME_WIDTH.layers]}), FEATURES)
    assert not any("conv_weight" in name or "join" in name for name in plain.state_dict())  # checkpoints unchanged


def _archs(bits: int) -> list[Arch]:
    """Every mixer, widths that grow, shrink and stay, at `bits`."""
    return [SPACE.validate(Arch(embed, tuple(LayerArch(heads, mlp, mixer, bits, width) for heads, mlp, mixer, width
                                             in layers)))
            for embed, layers in ((32, [(1, 32, "fourier", None), (1, 48, "conv3", 24), (2, 32, "conv5", 32)]),
                                  (16, [(1, 32, "conv5", None), (2, 64, "softmax", 32), (1, 16, "fourier", 16)]))]


# fp32 without padding (the Fourier layer's DFT held whole), int8 on padded texts (each text's own DFT);
# each artifact exports a graph per new part structure (seconds each): the first arch holds every new mixer
# and a width that shrinks and one that grows, so it alone is built (the second is extracted only)
@pytest.mark.parametrize("kind, bits", [("features", 32), ("text", 8)])
def test_supernet_extracted_and_onnx_compute_the_same(supernets, kind, bits):
    model, runtime = supernets[kind], runtime_named("onnxruntime")
    x = _inputs(model.task, 6)
    for i, arch in enumerate(_archs(bits)):
        static = model.extract(arch).eval()
        with torch.no_grad():
            expected = model(x, arch)
            torch.testing.assert_close(static(x), expected, atol=1e-5, rtol=0)
            if i == 0:
                program = runtime.deploy(static, x)  # checked against the subnet on build
                # fp32: the same products in another order; int8: the int8 kernels' rounding, as every int8 layer
                assert (program(x) - expected).abs().max() < (1e-4 if bits == 32 else 2e-2)
        weights = sum(p.numel() for p in static.parameters())
        assert arch_costs(SPACE, model.task, arch).params == weights


def test_one_pass_equals_each_arch_on_its_part():
    model = Supernet(SAME_WIDTH, TEXT, seed=1)
    x = _inputs(TEXT, 24)
    rng = np.random.default_rng(0)
    for _ in range(8):
        archs = [SAME_WIDTH.sample(rng) for _ in range(int(rng.choice([2, 3, 4])))]
        part = 24 // len(archs)
        alone = torch.cat([model(x[i * part:(i + 1) * part], a) for i, a in enumerate(archs)])
        # an int8 activation on a rounding boundary may round the other way after a float-order
        # difference: one step moves a logit by about 5e-5 here
        torch.testing.assert_close(forward_parts(model, x[:part * len(archs)], archs), alone, atol=1e-4, rtol=0)


def test_gradients_reach_only_the_active_kernel_centre_and_join_slice(supernets):
    model = Supernet(SPACE, FEATURES, seed=0)
    arch = Arch(32, (LayerArch(1, 32, "conv3", 32), LayerArch(2, 24, "softmax", 32, width=24)))
    model(_inputs(FEATURES, 2), arch).sum().backward()
    kernel = model.blocks[0].attention.conv_weight.grad
    assert kernel[:8, 1:4].abs().sum() > 0 and kernel[8:].abs().sum() == 0 and kernel[:, [0, 4]].abs().sum() == 0
    join = model.blocks[1].join.weight.grad
    assert join[:24, :32].abs().sum() > 0 and join[24:].abs().sum() == 0
    assert model.blocks[2].join.weight.grad is None  # the third layer is not in the arch


def test_a_join_starts_as_the_identity_and_only_where_widths_differ(supernets):
    model = Supernet(SPACE, FEATURES, seed=0).eval()
    assert torch.equal(model.blocks[1].join.weight, torch.eye(32)) and model.blocks[0].join is None
    same = Arch(32, (LayerArch(1, 32, "softmax", 32), LayerArch(1, 32, "softmax", 32, width=32)))
    static = model.extract(same)
    assert static.blocks[1].join is None
    narrower = model.extract(Arch(32, (LayerArch(1, 32, "softmax", 32), LayerArch(1, 16, "softmax", 32, width=16))))
    assert narrower.blocks[1].join.weight.shape == (16, 32) and narrower.head.classifier.in_features == 16
