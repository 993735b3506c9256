"""Runtimes that execute deployed models: ONNX Runtime (CPU default), AOTInductor."""

from predictors.runtimes import aot_inductor, onnx_runtime  # noqa: F401 - each registers itself
from predictors.runtimes.base import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    ArtifactMismatch,
    Program,
    Runtime,
    RuntimeUnavailable,
    runtime_named,
)

__all__ = ["DEFAULT_RUNTIME", "RUNTIMES", "ArtifactMismatch", "Program", "Runtime", "RuntimeUnavailable",
           "runtime_named"]
