"""The elastic transformer supernet: model, tasks, training, extraction, checkpoints."""

from supernet import mixers  # noqa: F401 - registers every token mixer's definition with the search space
