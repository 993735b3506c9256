import sys
import types

import pytest
import torch

from supernet.task_spec import TaskSpec
from supernet.tasks import Task, TaskError, load_task


def test_digits_splits_are_seeded_and_disjoint():
    a, b, c = load_task("digits", 0), load_task("digits", 0), load_task("digits", 1)
    assert torch.equal(a.split("train")[0], b.split("train")[0])
    assert not torch.equal(a.split("train")[0], c.split("train")[0])
    sizes = [len(a.split(s)[1]) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270
    rows = {tuple(x.flatten().tolist()) for s in ("val", "test") for x in a.split(s)[0]}
    overlap = sum(tuple(x.flatten().tolist()) in rows for x in a.split("train")[0])
    assert overlap < 5  # a few digits images are exact duplicates in the data set itself
    assert a.spec == TaskSpec("features", 4, 16, 10, patch_grid=(4, 4))  # 2x2-pixel patches of the 8x8 image


def test_mnist1d_generates_offline(monkeypatch):
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("the mnist1d task must not download")

    monkeypatch.setattr(requests, "get", no_network)
    task = load_task("mnist1d", 0, {"num_samples": 1000})
    x, y = task.split("train")
    assert x.shape[1:] == (10, 4) and task.spec.seq_len == 10 and task.spec.input_dim == 4
    assert len(task.split("test")[1]) == 200 and len(task.split("val")[1]) == 80
    assert set(y.tolist()) == set(range(10))
    scalar = load_task("mnist1d", 0, {"num_samples": 1000, "patch": 1})
    assert scalar.split("train")[0].shape[1:] == (40, 1)  # the same sequences, one value a token
    assert torch.equal(scalar.split("train")[0].reshape(-1, 10, 4), x)


def test_listops_lengths_labels_and_answers():
    task = load_task("listops", 3, {"seq_len": 64, "train_size": 50, "val_size": 10, "test_size": 10})
    x, y = task.split("train")
    assert x.shape == (50, 64) and task.spec.input_kind == "tokens"
    lengths = (x != 15).sum(dim=1)
    assert lengths.max() <= 64 and lengths.min() >= 1
    # recompute each answer from the tokens
    names = {10: max, 11: min, 12: lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else int((sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2),
             13: lambda v: sum(v) % 10}
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        stack = [[]]
        ops = []
        for token in row:
            if token < 10:
                stack[-1].append(token)
            elif token in names:
                ops.append(token)
                stack.append([])
            elif token == 14:
                values = stack.pop()
                stack[-1].append(int(names[ops.pop()](values)))
        assert stack[-1][0] == label


def test_user_task_by_module_function(monkeypatch):
    module = types.ModuleType("my_tasks")

    def tiny_task(seed: int, size: int = 8) -> Task:
        g = torch.Generator().manual_seed(seed)
        split = (torch.randn(size, 5, 3, generator=g), torch.randint(2, (size,), generator=g))
        return Task("mine", TaskSpec("features", 3, 5, 2), {"train": split, "val": split, "test": split})

    module.tiny_task = tiny_task
    module.broken = lambda seed: "not a task"
    monkeypatch.setitem(sys.modules, "my_tasks", module)
    assert len(load_task("my_tasks:tiny_task", 0, {"size": 4}).split("val")[1]) == 4
    with pytest.raises(TaskError, match="returned str"):
        load_task("my_tasks:broken")
    with pytest.raises(TaskError, match="no function 'missing'"):
        load_task("my_tasks:missing")
    with pytest.raises(TaskError, match="cannot import module"):
        load_task("no_such_module_xyz:f")


@pytest.mark.parametrize("name, options, message", [
    ("imagenet", {}, "unknown task 'imagenet'"),
    ("digits", {"patch": 3}, "patch must divide 8"),
    ("digits", {"patch": True}, "patch must divide 8"),
    ("digits", {"colour": 1}, r"unknown option\(s\) \['colour'\]"),
    ("listops", {"seq_len": 4}, r"seq_len must be an integer in \[8, 65,536\]"),
    ("mnist1d", {"patch": 3}, "patch must divide 40"),
    ("mnist1d", {"patch": True}, "patch must divide 40"),
    ("mnist1d", {"num_samples": 10}, r"num_samples must be an integer in \[50, 10,000,000\]"),
    ("digits", {"seed": 4}, "unknown option"),
])
def test_bad_tasks(name, options, message):
    with pytest.raises(TaskError, match=message):
        load_task(name, 0, options)
