"""Several archs in one pass compute what each arch computes on its part, forward and backward:
on our encoder and on a BERT layout (post-LN, embedding norm, pooler, padded text)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_space import SearchSpace
from supernet.model import Supernet
from supernet.pretrained.importing import model_space, open_pretrained
from supernet.task_spec import TaskSpec
from supernet.tasks import load_task
from supernet.training.multi_arch import forward_parts
from supernet.training.train import TrainSettings, sandwich_loss
from tests.supernet.pretrained_models import save_text_model, tiny_tokenizer


def per_part(model, x, archs):
    part = len(x) // len(archs)
    return torch.cat([model(x[i * part:(i + 1) * part], arch) for i, arch in enumerate(archs)])


def test_one_pass_equals_each_arch_on_its_part(tiny_space):
    task = load_task("digits", 0)
    model = Supernet(tiny_space, task.spec, seed=1)
    x = task.split("train")[0][:24]
    rng = np.random.default_rng(0)
    for _ in range(40):
        archs = [tiny_space.sample(rng) for _ in range(int(rng.integers(1, 5)))]
        archs = archs if 24 % len(archs) == 0 else archs[:2]
        assert torch.allclose(forward_parts(model, x, archs), per_part(model, x, archs), atol=1e-5)


def test_one_pass_with_4_bit_layers_and_int8_tables():
    space = SearchSpace.from_dict({"head_dim": 8, "embed_dim": [16, 32], "depth": [1, 2], "quant_block_size": 16,
                                   "quantize_embeddings": True, "layer": {
                                       "num_heads": [2, 4], "mlp_dim": [16, 32], "attention": ["softmax", "linear"],
                                       "bits": [32, 8, 4]}})
    model = Supernet(space, TaskSpec("tokens", 50, 10, 3), seed=1)
    x = torch.randint(50, (24, 10), generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        archs = [space.sample(rng) for _ in range(int(rng.choice([2, 3, 4])))]
        assert torch.allclose(forward_parts(model, x, archs), per_part(model, x, archs), atol=1e-5)


def test_one_pass_on_a_bert_layout_with_padding(tmp_path):
    model = open_pretrained(save_text_model(tmp_path, "bert"))
    data = model_space(model)
    data["embed_dim"] = [16, 24, 32]
    space = SearchSpace.from_dict(data)
    spec = TaskSpec("text", model.config.vocab_size, 12, 3, style=model.family.style(model.config))
    supernet = Supernet(space, spec, seed=0)
    tokenizer = tiny_tokenizer()[0]
    ids = tokenizer(["the cat sat on the mat", "a dog", "good", "very big red dog ran fast"] * 2,
                    padding="max_length", max_length=12, truncation=True, return_tensors="pt")["input_ids"]
    x = torch.stack([ids, torch.zeros_like(ids)], dim=-1)
    rng = np.random.default_rng(1)
    for _ in range(20):
        archs = [space.sample(rng) for _ in range(4)]
        assert torch.allclose(forward_parts(supernet, x, archs), per_part(supernet, x, archs), atol=1e-5)


def test_the_gradients_are_those_of_each_arch_on_its_part(tiny_space):
    task = load_task("digits", 0)
    x, y = (t[:32] for t in task.split("train"))
    rng = np.random.default_rng(2)
    largest, students = tiny_space.largest(), [tiny_space.sample(rng) for _ in range(4)]
    grads = []
    for archs_per_pass in (1, 4):
        model = Supernet(tiny_space, task.spec, seed=1)
        settings = TrainSettings(archs_per_pass=archs_per_pass)
        if archs_per_pass == 1:  # by hand: each student on its quarter of the batch
            loss = F.cross_entropy(model(x, largest), y)
            for i, arch in enumerate(students):
                loss = loss + (1.0 if i == 0 else 0.5 / 3) * F.cross_entropy(model(x[8 * i:8 * i + 8], arch),
                                                                          y[8 * i:8 * i + 8])
        else:
            loss = sandwich_loss(model, x, y, largest, students, settings, step=0)[0]
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("archs_per_pass", [2, 3])
def test_an_uneven_group_leaves_a_remainder_out(tiny_space, archs_per_pass):
    task = load_task("digits", 0)
    x, y = (t[:10] for t in task.split("train"))
    model = Supernet(tiny_space, task.spec, seed=1)
    rng = np.random.default_rng(3)
    students = [tiny_space.sample(rng) for _ in range(3)]
    loss, _, accuracy = sandwich_loss(model, x, y, tiny_space.largest(), students,
                                      TrainSettings(archs_per_pass=archs_per_pass), step=0)
    assert torch.isfinite(loss) and 0.0 <= float(accuracy) <= 1.0
