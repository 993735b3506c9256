"""Tasks: seeded train/val/test splits plus the input/output shape the model needs (`load_task`).

A task is one of the shipped ones (`shipped`), the user's files prepared by a pretrained model's own
processor (`user_data`: `text`, `image-folder`; `causal_lm`: `causal-lm`, for a decoder LM), or
`module:function`, called as `function(seed=..., **options)` and returning a `Task` (`base`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from search_space import InputError
from supernet.tasks.base import Task, TaskError
from supernet.tasks.shipped import SPLITS, digits, listops, mnist1d

__all__ = ["PRETRAINED_TASKS", "QUALITY_DIRECTIONS", "TASKS", "TASK_METRICS", "Task", "TaskError", "digits", "listops",
           "load_task", "mnist1d", "quality_metric"]

TASKS: dict[str, Callable[..., Task]] = {"digits": digits, "mnist1d": mnist1d, "listops": listops}
PRETRAINED_TASKS = ("text", "image-folder", "causal-lm")  # the user's files, prepared by the pretrained model's own
# processor
# what a task's models are scored by (`Task.metric`), where not accuracy; and which way is better
TASK_METRICS = {"causal-lm": "perplexity"}
QUALITY_DIRECTIONS = {"accuracy": "maximize", "perplexity": "minimize"}


def quality_metric(name: str) -> str:
    """The metric task `name` scores a model by (a user's `module:function` task: accuracy)."""
    return TASK_METRICS.get(name, "accuracy")


def _task_factory(name: str) -> Callable[..., Task] | None:
    if name in TASKS:
        return TASKS[name]
    if name in PRETRAINED_TASKS:
        from supernet.tasks import causal_lm, user_data

        return {"text": user_data.text, "image-folder": user_data.image_folder, "causal-lm": causal_lm.causal_lm}[name]
    return None


def load_task(name: str, seed: int = 0, options: dict | None = None) -> Task:
    options = dict(options or {})
    shipped = _task_factory(name)
    if shipped is not None:
        factory = shipped
    elif ":" in name:
        factory = _user_factory(name)
    else:
        raise TaskError(f"unknown task {name!r}; shipped tasks are {sorted([*TASKS, *PRETRAINED_TASKS])}, "
                        f"or give module:function")
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        raise TaskError(f"task {name!r}: {factory!r} is not a function that makes a task") from None
    if "seed" not in accepted and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        raise TaskError(f"task {name!r}: the function takes no `seed` argument")
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = set(options) - set(accepted) | ({"seed"} & set(options))
        if unknown:
            raise TaskError(f"task {name!r}: unknown option(s) {sorted(map(str, unknown))}")
    if shipped is not None:
        task = factory(seed=seed, **options)  # shipped tasks check their options: a failure here is a bug
    else:
        try:
            task = factory(seed=seed, **options)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code failed on these options: one line, not a traceback
            raise TaskError(f"task {name!r} failed with options {options}: {type(exc).__name__}: {exc}") from None
    _check_task(task, name)
    return task


def _user_factory(name: str) -> Callable[..., Task]:
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"task {name!r}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise TaskError(f"task {name!r}: module {module_name!r} has no function {function_name!r}")
    return factory


def _check_task(task: object, name: str) -> None:
    if not isinstance(task, Task):
        raise TaskError(f"task {name!r}: the function returned {type(task).__name__}, not a supernet.tasks.Task")
    if not isinstance(task.splits, dict):
        raise TaskError(f"task {name!r}: splits must be a dict of split name -> (inputs, labels)")
    for split in SPLITS:
        if split not in task.splits:
            raise TaskError(f"task {name!r}: split {split!r} missing")
        pair = task.splits[split]
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(t, Tensor) for t in pair)):
            raise TaskError(f"task {name!r}: split {split!r} must be a pair of tensors (inputs, labels)")
        x, y = pair
        per_token = task.spec.style.causal  # a language model's labels: each token's next
        if per_token and (x.dim() != 2 or y.shape != x.shape or y.dtype != torch.long):
            raise TaskError(f"task {name!r}: split {split!r} needs token ids and next tokens of one shape "
                            f"(samples, tokens), got {tuple(x.shape)} and {tuple(y.shape)} {y.dtype}")
        if not per_token and (x.dim() < 2 or y.dim() != 1 or y.dtype != torch.long):
            raise TaskError(f"task {name!r}: split {split!r} needs inputs of shape (samples, tokens[, features]) and "
                            f"integer labels of shape (samples,), got {tuple(x.shape)} and {tuple(y.shape)} {y.dtype}")
        if len(x) != len(y) or len(y) == 0:
            raise TaskError(f"task {name!r}: split {split!r} has {len(x)} inputs and {len(y)} labels")
        if x.shape[1] > task.spec.seq_len:
            raise TaskError(f"task {name!r}: split {split!r} has {x.shape[1]} tokens, more than seq_len "
                            f"{task.spec.seq_len}")
        if int(y.min()) < 0 or int(y.max()) >= task.spec.num_classes:
            raise TaskError(f"task {name!r}: split {split!r} has labels outside [0, {task.spec.num_classes})")
