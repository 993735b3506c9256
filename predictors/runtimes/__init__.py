"""Runtimes that execute deployed models: ONNX Runtime (CPU default; a decoder LM's artifact with its KV cache in
`onnx_decoder`), AOTInductor."""

from predictors.runtimes import aot_inductor, onnx_decoder, onnx_runtime  # noqa: F401 - each registers itself
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
