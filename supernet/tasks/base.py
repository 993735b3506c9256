"""`Task`: a task's data splits and the shapes its model needs; `TaskError` for bad task input."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from search_space import InputError
from supernet.task_spec import TaskSpec


class TaskError(InputError):
    """Unknown task, bad task options, or a user task that returns the wrong thing."""


@dataclass
class Task:
    name: str
    spec: TaskSpec
    splits: dict[str, tuple[Tensor, Tensor]]  # split -> (inputs, integer labels)
    metric: str = "accuracy"
    labels: list[str] | None = None  # the name of each class, where the data names them

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name not in self.splits:
            raise TaskError(f"task {self.name!r}: no split {name!r}; splits are {list(self.splits)}")
        return self.splits[name]


def check_int(task: str, option: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TaskError(f"task {task}: {option} must be an integer in [{low}, {high:,}], got {value!r}")


