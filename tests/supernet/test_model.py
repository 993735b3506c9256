import numpy as np
import pytest
import torch

from search_space import Arch, LayerArch, SearchSpace, SpaceError
from supernet.model import Supernet
from supernet.task_spec import TaskSpec

FEATURES = TaskSpec("features", input_dim=4, seq_len=16, num_classes=10)
TOKENS = TaskSpec("tokens", input_dim=16, seq_len=24, num_classes=10)


def expected_params(space: SearchSpace, task: TaskSpec, arch: Arch) -> int:
    """Parameter count of a static subnet, written out by hand."""
    e = arch.embed_dim
    stem = (task.input_dim * e if task.input_kind == "tokens" else task.input_dim * e + e) + task.seq_len * e
    total = stem + 2 * e + e * task.num_classes + task.num_classes
    for layer in arch.layers:
        inner = layer.num_heads * space.head_dim
        attention = 3 * (e * inner + inner) + inner * e + e
        mlp = e * layer.mlp_dim + layer.mlp_dim + layer.mlp_dim * e + e
        total += 4 * e + attention + mlp
    return total


def inputs(task: TaskSpec, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if task.input_kind == "tokens":
        return torch.randint(task.input_dim, (batch, task.seq_len), generator=g)
    return torch.randn(batch, task.seq_len, task.input_dim, generator=g)


@pytest.fixture(scope="module")
def supernets(digits_space, tiny_space):
    made = {}
    for name, space in (("digits", digits_space), ("tiny", tiny_space)):
        for task in (FEATURES, TOKENS):
            model = Supernet(space, task, seed=1)
            with torch.no_grad():  # non-trivial biases and norms, so slicing mistakes show
                g = torch.Generator().manual_seed(2)
                for p in model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            made[(name, task.input_kind)] = (space, task, model.eval())
    return made


@pytest.mark.parametrize("space_name", ["digits", "tiny"])
@pytest.mark.parametrize("kind", ["features", "tokens"])
def test_extracted_model_equals_active_path(supernets, space_name, kind):
    space, task, model = supernets[(space_name, kind)]
    rng = np.random.default_rng(0)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(12)]
    assert any(layer.bits == 8 for arch in archs for layer in arch.layers)
    for arch in archs:
        x = inputs(task, 3, seed=len(arch.layers))
        static = model.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(static(x), model(x, arch), atol=1e-5, rtol=0)
        assert sum(p.numel() for p in static.parameters()) == expected_params(space, task, arch)


def test_extracted_low_bit_model_with_int8_tables_equals_active_path():
    space = SearchSpace.from_dict({"head_dim": 16, "embed_dim": [32, 64], "depth": [1, 2], "layer": {
        "num_heads": [2, 4], "mlp_dim": [32, 64], "attention": ["softmax", "linear"], "bits": [32, 8, 4, 2]}})
    assert space.quantize_embeddings
    model = Supernet(space, TOKENS, seed=1).eval()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(10)]
    assert {2, 4} <= {layer.bits for arch in archs for layer in arch.layers}
    for arch in archs:
        x = inputs(TOKENS, 3, seed=len(arch.layers))
        with torch.no_grad():
            torch.testing.assert_close(model.extract(arch).eval()(x), model(x, arch), atol=1e-5, rtol=0)


def test_extracted_model_is_independent_of_the_supernet(supernets):
    space, task, model = supernets[("tiny", "features")]
    arch = space.largest()
    static = model.extract(arch)
    supernet_storage = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not supernet_storage & {p.untyped_storage().data_ptr() for p in static.parameters()}
    assert not any(type(m).__name__.startswith("Elastic") for m in static.modules())
    x = inputs(task, 2, seed=0)
    before = static(x).detach().clone()
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.add_(1.0)
    try:
        torch.testing.assert_close(static(x), before)
    finally:
        with torch.no_grad():
            model.blocks[0].mlp.fc1.weight.sub_(1.0)


def test_extracted_layers_have_the_sub_sizes(supernets):
    space, task, model = supernets[("digits", "features")]
    arch = Arch(96, (LayerArch(2, 192, "linear", 8), LayerArch(8, 384, "local", 32)))
    static = model.extract(arch)
    first, second = static.blocks[0], static.blocks[1]
    assert first.attention.query.weight.shape == (32, 96) and first.mlp.fc1.weight.shape == (192, 96)
    assert first.attention.query.bits == 8 and not hasattr(second.attention.query, "bits")
    assert type(first.attention.kernel).__name__ == "LinearAttention"
    assert second.mlp.fc2.weight.shape == (96, 384)


def test_extract_refuses_an_arch_outside_the_space(supernets):
    space, _, model = supernets[("tiny", "features")]
    with pytest.raises(SpaceError, match="embed_dim"):
        model.extract(Arch(48, space.largest().layers))


def test_weights_are_shared_across_attention_types(supernets):
    space, _, model = supernets[("digits", "features")]
    names = [name for name, _ in model.named_parameters() if name.startswith("blocks.0.attention")]
    assert sorted(names) == sorted(f"blocks.0.attention.{p}.{w}" for p in ("query", "key", "value", "out")
                                   for w in ("weight", "bias"))


def test_init_is_seeded(digits_space):
    a, b, c = (Supernet(digits_space, FEATURES, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.blocks[0].mlp.fc1.weight, c.blocks[0].mlp.fc1.weight)


def test_gradients_reach_only_the_active_slice(tiny_space):
    model = Supernet(tiny_space, FEATURES, seed=0)
    arch = tiny_space.smallest()
    model(inputs(FEATURES, 4, 0), arch).sum().backward()
    grad = model.blocks[0].mlp.fc1.weight.grad
    rows, cols = arch.layers[0].mlp_dim, arch.embed_dim
    assert grad[:rows, :cols].abs().sum() > 0
    assert grad[rows:].abs().sum() == 0 and grad[:, cols:].abs().sum() == 0
    assert model.blocks[1].mlp.fc1.weight.grad is None  # depth 1: the second block is inactive
