"""The shipped tasks: `digits` (scikit-learn's 8x8 digits as patch tokens), `mnist1d` (the package's
offline generator, never its download), `listops` (generated nested list operations; long sequences where
the attention type matters). Everything is generated locally: nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from supernet.task_spec import TaskSpec
from supernet.tasks.base import Task, TaskError
from supernet.tasks.base import check_int as _check_int

SPLITS = ("train", "val", "test")


def _three_way(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, val: float, test: float) -> dict:
    order = rng.permutation(len(y))
    n_test, n_val = int(round(test * len(y))), int(round(val * len(y)))
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {name: (x[index], y[index]) for name, index in parts.items()}


def _as_tensors(splits: dict, input_dtype: torch.dtype) -> dict[str, tuple[Tensor, Tensor]]:
    return {name: (torch.as_tensor(x, dtype=input_dtype), torch.as_tensor(y, dtype=torch.long))
            for name, (x, y) in splits.items()}


def digits(seed: int = 0, patch: int = 2) -> Task:
    """8x8 digits cut into patch x patch tokens (patch 2: 16 tokens of 4 pixels)."""
    from sklearn.datasets import load_digits

    if isinstance(patch, bool) or not isinstance(patch, int) or patch not in (1, 2, 4, 8):
        raise TaskError(f"task digits: patch must divide 8 (1, 2, 4 or 8), got {patch!r}")
    data = load_digits()
    images = data.images.astype(np.float32) / 16.0
    grid = 8 // patch
    tokens = (images.reshape(-1, grid, patch, grid, patch).transpose(0, 1, 3, 2, 4)
              .reshape(-1, grid * grid, patch * patch))
    tokens = (tokens - 0.3) / 0.4  # roughly zero-mean, unit-variance pixels
    splits = _three_way(tokens, data.target, np.random.default_rng(seed), val=0.15, test=0.15)
    spec = TaskSpec("features", input_dim=patch * patch, seq_len=grid * grid, num_classes=10, patch_grid=(grid, grid))
    return Task("digits", spec, _as_tensors(splits, torch.float32))


def mnist1d(seed: int = 0, num_samples: int = 5000, patch: int = 4) -> Task:
    """MNIST-1D: 40-step sequences, generated offline, cut into patch-step tokens
    (patch 4: 10 tokens of 4 values). One value a token trains badly: a supernet
    on it stayed at chance for 700 steps where patch 4 learns."""
    from mnist1d.data import get_dataset_args, make_dataset

    if isinstance(patch, bool) or not isinstance(patch, int) or patch not in (1, 2, 4, 5, 8, 10, 20, 40):
        raise TaskError(f"task mnist1d: patch must divide 40 (1, 2, 4, 5, 8, 10, 20 or 40), got {patch!r}")
    _check_int("mnist1d", "num_samples", num_samples, 50, 10**7)
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)  # generates; get_dataset would download
    x = np.asarray(data["x"], dtype=np.float32).reshape(len(data["x"]), -1, patch)
    x_test = np.asarray(data["x_test"], dtype=np.float32).reshape(len(data["x_test"]), -1, patch)
    mean, std = x.mean(), x.std()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = len(x) // 10
    val, train = order[:n_val], order[n_val:]
    splits = {"train": ((x[train] - mean) / std, data["y"][train]), "val": ((x[val] - mean) / std, data["y"][val]),
              "test": ((x_test - mean) / std, data["y_test"])}
    spec = TaskSpec("features", input_dim=patch, seq_len=x.shape[1], num_classes=10)
    return Task("mnist1d", spec, _as_tensors(splits, torch.float32))


# listops vocabulary: digits 0-9, four operators, the closing bracket, padding
_OPERATORS = {"MAX": 10, "MIN": 11, "MED": 12, "SM": 13}
_CLOSE, _PAD = 14, 15
_VOCAB = 16


def _listops_expression(rng: np.random.Generator, budget: int, depth: int, max_depth: int) -> tuple[list[int], int]:
    """An expression of at most `budget` tokens; operators while the budget allows."""
    if budget < 4 or depth >= max_depth or (depth > 0 and rng.random() < 0.15):
        digit = int(rng.integers(10))
        return [digit], digit
    name = list(_OPERATORS)[rng.integers(len(_OPERATORS))]
    n_args = int(rng.integers(2, min(5, budget - 2) + 1))
    # share the budget (less the operator and the bracket) at random among the arguments
    shares = rng.multinomial(budget - 2 - n_args, rng.dirichlet(np.ones(n_args))) + 1
    tokens, values = [_OPERATORS[name]], []
    for share in shares:
        sub_tokens, value = _listops_expression(rng, int(share), depth + 1, max_depth)
        tokens += sub_tokens
        values.append(value)
    tokens.append(_CLOSE)
    result = {"MAX": max, "MIN": min, "MED": lambda v: int(np.median(v)), "SM": lambda v: sum(v) % 10}[name](values)
    return tokens, int(result)


def listops(seed: int = 0, seq_len: int = 128, train_size: int = 4000, val_size: int = 500,
            test_size: int = 500, max_depth: int = 10) -> Task:
    """ListOps (Nangia & Bowman, 2018; as in Long Range Arena): the value (0-9) of a
    nested expression of MAX, MIN, MED and SM (sum mod 10) over digits, as a
    token sequence padded to `seq_len`. The answer depends on tokens far apart,
    so the attention type matters for accuracy as well as for latency."""
    for option, value, low, high in (("seq_len", seq_len, 8, 1 << 16), ("train_size", train_size, 1, 10**7),
                                     ("val_size", val_size, 1, 10**7), ("test_size", test_size, 1, 10**7),
                                     ("max_depth", max_depth, 1, 1000)):
        _check_int("listops", option, value, low, high)
    rng = np.random.default_rng(seed)
    total = train_size + val_size + test_size
    x = np.full((total, seq_len), _PAD, dtype=np.int64)
    y = np.zeros(total, dtype=np.int64)
    for i in range(total):
        budget = int(rng.integers(seq_len // 2, seq_len + 1))  # lengths spread over the upper half
        tokens, y[i] = _listops_expression(rng, budget, 0, max_depth)
        x[i, : len(tokens)] = tokens
    splits = {"train": (x[:train_size], y[:train_size]),
              "val": (x[train_size:train_size + val_size], y[train_size:train_size + val_size]),
              "test": (x[train_size + val_size:], y[train_size + val_size:])}
    spec = TaskSpec("tokens", input_dim=_VOCAB, seq_len=seq_len, num_classes=10)
    return Task("listops", spec, _as_tensors(splits, torch.long))
