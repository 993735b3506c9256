"""The `none` mixer (a layer that keeps its MLP alone), through the space, the supernet, extraction, the
multi-arch pass, the cost model and the ONNX Runtime artifact, in pre-LN and post-LN blocks."""

import numpy as np
import pytest
import torch

from predictors.cost import arch_costs
from predictors.runtimes import runtime_named
from search_space import Arch, LayerArch, SearchSpace
from search_space.optuna_map import arch_from_params, params_from_arch
from supernet.model import Supernet
from supernet.task_spec import ModelStyle, TaskSpec
from supernet.training.multi_arch import forward_parts

SPACE = SearchSpace.from_dict({"name": "skip", "head_dim": 8, "embed_dim": [16], "depth": [1, 2, 3],
                               "layer": {"num_heads": [1, 2], "mlp_dim": [16, 32], "attention": ["softmax", "none"],
                                         "bits": [32, 8]}})
PRE_LN = TaskSpec("features", input_dim=4, seq_len=6, num_classes=3)
POST_LN = TaskSpec("text", input_dim=20, seq_len=6, num_classes=3,
                   style=ModelStyle(pad_token_id=0, norm_first=False, embedding_norm=True))
ARCH = Arch(16, (LayerArch(2, 32, "softmax", 32), LayerArch(1, 16, "none", 8), LayerArch(1, 32, "none", 32)))


def _inputs(task: TaskSpec, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if task.input_kind == "features":
        return torch.randn(batch, task.seq_len, task.input_dim, generator=g)
    ids = torch.randint(1, task.input_dim, (batch, task.seq_len), generator=g)
    ids[0, 3:] = 0  # one padded text
    return torch.stack([ids, torch.zeros_like(ids)], dim=-1)


def test_a_none_layer_is_headless_and_searchable():
    assert SPACE.layers[0].heads_of("none", 2) == 1  # one network, one arch: written with the smallest choice
    with pytest.raises(Exception, match="a none layer has no heads"):
        SPACE.validate(Arch(16, (LayerArch(2, 16, "none", 32),)))
    rng = np.random.default_rng(0)
    sampled = [SPACE.sample(rng, mode) for mode in ("depth_uniform", "arch_uniform") for _ in range(30)]
    assert any(layer.mixer == "none" for arch in sampled for layer in arch.layers)
    assert all(arch_from_params(SPACE, params_from_arch(SPACE, arch)) == arch for arch in sampled)


@pytest.mark.parametrize("task", [PRE_LN, POST_LN], ids=["pre-ln", "post-ln"])
def test_supernet_extracted_onnx_and_cost_agree(task):
    model = Supernet(SPACE, task, seed=1).eval()
    x = _inputs(task, 4)
    static = model.extract(ARCH).eval()
    assert static.blocks[1].attention is None and (static.blocks[1].norm1 is None) == task.style.norm_first
    with torch.no_grad():
        expected = model(x, ARCH)
        torch.testing.assert_close(static(x), expected, atol=1e-5, rtol=0)
        program = runtime_named("onnxruntime").deploy(static, x)  # checked against the subnet on build
        assert (program(x) - expected).abs().max() < 2e-2  # an int8 layer's rounding
    costs = arch_costs(SPACE, task, ARCH)
    assert costs.params == sum(p.numel() for p in static.parameters())
    assert costs.by_op["mixing:none"] == 0 and costs.per_layer[1]["linear@8"] < costs.per_layer[0]["linear@32"]


def test_one_pass_with_none_layers_equals_each_arch_alone():
    model = Supernet(SPACE, POST_LN, seed=1)
    x = _inputs(POST_LN, 12)
    archs = [ARCH, SPACE.largest(), Arch(16, (LayerArch(1, 16, "none", 32),))]
    alone = torch.cat([model(x[i * 4:(i + 1) * 4], a) for i, a in enumerate(archs)])
    torch.testing.assert_close(forward_parts(model, x, archs), alone, atol=1e-4, rtol=0)
