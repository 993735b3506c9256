"""ViT-ResNAS's stages: token reduction at a boundary through the supernet, extraction, the ONNX Runtime
artifact and the cost model, on a patch grid with a [CLS] token, a sequence the factor does not divide,
and padded texts (the mask pooled with the tokens)."""

import numpy as np
import pytest
import torch

from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import Arch, InputError, LayerArch, SearchSpace
from search_space.layer_genes import factor_of
from supernet.model import Supernet
from supernet.task_spec import ModelStyle, TaskSpec
from supernet.token_reduction import TokenLayout, input_layout, layer_layouts, reduce_tokens
from supernet.training.train import TrainSettings, sandwich_loss

SPACE = SearchSpace.from_dict({"name": "stages", "head_dim": 8, "local_window": 2, "embed_dim": [16, 32],
                               "depth": [1, 2, 3], "layer": {"num_heads": [1, 2], "mlp_ratio": [1, 2],
                                                             "attention": ["softmax", "local", "fourier", "conv3"],
                                                             "bits": [32, 8], "width": [16, 32]},
                               "per_layer": [{"layers": [1], "reduce": [1, 2]}, {"layers": [2], "reduce": [1, 3]}]})
TASKS = {  # a 6x6 patch grid read through [CLS] (ViT's layout), 13 unpadded tokens, padded texts pooled at [CLS]
    "grid": TaskSpec("features", 4, 36, 3, style=ModelStyle(cls_token=True, pooling="cls"), patch_grid=(6, 6)),
    "sequence": TaskSpec("features", 4, 13, 3),
    "text": TaskSpec("text", 30, 13, 3, style=ModelStyle(pad_token_id=0, pooling="cls")),
}


def _inputs(task: TaskSpec, batch: int, seq_len: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if task.input_kind == "features":
        return torch.randn(batch, task.seq_len, task.input_dim, generator=g)
    ids = torch.randint(1, task.input_dim, (batch, seq_len or task.seq_len), generator=g)
    for row, length in enumerate(torch.randint(3, task.seq_len + 1, (batch,), generator=g).tolist()):
        ids[row, length:] = 0  # padded, at uneven lengths
    return torch.stack([ids, torch.zeros_like(ids)], dim=-1)


def _supernet(task: TaskSpec) -> Supernet:
    model = Supernet(SPACE, task, seed=1)
    with torch.no_grad():  # non-zero projections, biases and norms, so that slicing mistakes show
        g = torch.Generator().manual_seed(2)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_a_reduction_starts_as_the_mean_of_each_window_keeping_cls_and_pooling_the_mask():
    x = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)
    mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    zero = torch.zeros(2, 2 * 2)
    out, pooled = reduce_tokens(x, mask, TokenLayout(6, 1), 2, torch.ones(2), torch.zeros(2), 1e-5, zero,
                                torch.zeros(2))
    assert torch.equal(out[:, 0], x[:, 0])  # [CLS] apart
    torch.testing.assert_close(out[0, 1:], torch.stack([x[0, 1:3].mean(0), x[0, 3:5].mean(0), x[0, 5]]))
    torch.testing.assert_close(out[1, 1:3], torch.stack([x[1, 1:3].mean(0), x[1, 3]]))  # its real tokens only
    assert pooled.tolist() == [[True] * 4, [True, True, True, False]]
    assert input_layout(TASKS["grid"]) == TokenLayout(37, 1, (6, 6))  # [CLS] apart from the 6x6 patches
    grid = TokenLayout(16, 0, (4, 4))
    image = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)
    out, _ = reduce_tokens(image, None, grid, 2, torch.ones(1), torch.zeros(1), 1e-5, torch.zeros(1, 4),
                           torch.zeros(1))
    assert out.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # 2x2 windows of the 4x4 grid, row by row
    assert grid.reduced(2) == TokenLayout(4, 0, (2, 2))
    with pytest.raises(InputError, match="a reduction by 3x3 does not divide the 4x4 patch grid"):
        grid.reduced(3)
    with pytest.raises(InputError, match="a reduction by 7 of a sequence of 6 tokens would leave fewer than one"):
        TokenLayout(6, 0).reduced(7)


def _staged(rng: np.random.Generator, bits: int) -> list[Arch]:
    """Three archs that reduce, at `bits`: one at each boundary and one at both."""
    archs, wanted = [], [(2, None), (1, 3), (2, 3)]
    while wanted:
        arch = SPACE.sample(rng)
        factors = (factor_of(arch, 1) if arch.depth > 1 else 1, factor_of(arch, 2) if arch.depth > 2 else None)
        if (factors[0], factors[1] if arch.depth > 2 else None) in wanted[:1]:
            wanted.pop(0)
            archs.append(SPACE.validate(Arch(arch.embed_dim, tuple(
                LayerArch(layer.num_heads, layer.mlp_dim, layer.mixer, bits, layer.width, layer.reduce)
                for layer in arch.layers))))
    return archs


# fp32 on the grid and the unpadded sequence, int8 on padded texts; each artifact exports a graph per new
# part structure (seconds each), so only two layers of one arch go through ONNX Runtime on the grid and on
# texts (a boundary between them: the pooled mask chained to the next layer and the head)
@pytest.mark.parametrize("kind, bits, built", [("grid", 32, True), ("sequence", 32, False), ("text", 8, True)])
def test_supernet_extracted_and_onnx_compute_the_same_through_reductions(kind, bits, built):
    task = TASKS[kind]
    model, x = _supernet(task), _inputs(task, 6)
    archs = _staged(np.random.default_rng({"grid": 0, "sequence": 1, "text": 2}[kind]), bits)
    with torch.no_grad():
        for arch in archs:
            static = model.extract(arch).eval()
            expected = model(x, arch)
            torch.testing.assert_close(static(x), expected, atol=1e-5, rtol=0)
            assert arch_costs(SPACE, task, arch).params == sum(p.numel() for p in static.parameters())
        if built:
            two = Arch(archs[0].embed_dim, archs[0].layers[:2])
            program = runtime_named("onnxruntime").deploy(model.extract(two).eval(), x)  # checked on build as well
            assert (program(x) - model(x, two)).abs().max() < (1e-4 if bits == 32 else 2e-2)
    tokens = [layout.tokens for layout in layer_layouts(task, archs[-1])]
    assert tokens == {"grid": [37, 10, 2], "sequence": [13, 7, 3], "text": [13, 7, 3]}[kind][:archs[-1].depth]
    costs = arch_costs(SPACE, task, archs[-1])
    assert [stage["tokens"] for stage in costs.stages] == tokens
    assert sum(stage["macs"] for stage in costs.stages) < costs.macs  # the stem and head are in no stage


def test_padding_changes_nothing_through_a_reduction():
    """A text padded to more tokens gives the same logits: windows count from the first token, a window
    of padding alone is padding, and the mask reaches every later layer and the pooling."""
    task = TASKS["text"]
    longer = TaskSpec("text", 30, 20, 3, style=task.style)
    model, wider = _supernet(task), Supernet(SPACE, longer, seed=1).eval()
    state = model.state_dict()
    state["stem.position"] = torch.cat([state["stem.position"], torch.zeros(7, 32)])
    wider.load_state_dict(state)
    x = _inputs(task, 6)
    padded = torch.cat([x, torch.zeros(6, 7, 2, dtype=x.dtype)], dim=1)
    for arch in _staged(np.random.default_rng(4), 32):
        with torch.no_grad():
            torch.testing.assert_close(wider(padded, arch), model(x, arch), atol=1e-5, rtol=0)


def test_a_space_without_stages_keeps_its_checkpoint_keys_and_a_staged_one_trains_its_projections():
    plain = SearchSpace.from_dict({**SPACE.to_dict(), "layers": [
        {k: v for k, v in c.to_dict().items() if k != "reduce"} for c in SPACE.layers]})
    assert not any("reductions" in name for name in Supernet(plain, TASKS["sequence"]).state_dict())
    model = Supernet(SPACE, TASKS["sequence"], seed=0).train()
    x, y = _inputs(TASKS["sequence"], 8), torch.arange(8) % 3
    smallest = SPACE.smallest()
    staged = _staged(np.random.default_rng(5), 32)[-1]
    loss, _, _ = sandwich_loss(model, x, y, SPACE.largest(), [smallest, staged], TrainSettings(archs_per_pass=2), 0)
    loss.backward()
    assert model.reductions["1"].weight["2"].grad.abs().sum() > 0 and model.reductions["2"].weight["3"].grad.abs().sum() > 0
