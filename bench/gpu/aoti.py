"""gpu-check's AOTInductor sections: artifacts compiled for the GPU, checked and timed beside the eager subnet."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any

from bench.gpu.bert import bert_from_checkpoint
from bench.gpu.common import (
    SEED,
    Context,
    all_8bit,
    require,
    staged,
)
from bench.gpu.digits import digits_checkpoint


def aot_inductor_figures(ctx: Context, supernet, space, task, seq_len: int | None, arch=None) -> dict[str, Any]:
    """`arch` (default: the largest), all 8-bit, compiled by AOTInductor for the device from its subnet on
    the CPU."""
    import numpy as np
    import torch

    from predictors.measure import Protocol, example_input, measure_many
    from predictors.runtimes.base import check_agreement
    from predictors.target import HardwareTarget

    supernet = supernet.eval()
    arch = all_8bit(arch or space.largest())
    subnet = supernet.extract(arch).eval()
    target = HardwareTarget("gpu-check", device=ctx.device, runtime="aotinductor", batch_size=1, seq_len=seq_len)
    runtime = target.inference_runtime
    example = example_input(task.spec, target)
    started = time.perf_counter()
    artifact = runtime.build(subnet, example, ctx.device)
    build_seconds = time.perf_counter() - started
    program = runtime.load(artifact, ctx.device, target.threads)
    eager_quantized = copy.deepcopy(subnet).to(ctx.device)  # what the search evaluated, on the device
    x_val, y_val = task.split("val")
    check_agreement(program, eager_quantized, x_val[:32].to(ctx.device), runtime.name)  # raises where they differ

    def accuracy(model) -> float:
        with torch.inference_mode():
            return sum(int((model(x_val[i:i + 256].to(ctx.device)).argmax(-1).cpu() == y_val[i:i + 256]).sum())
                       for i in range(0, len(y_val), 256)) / len(y_val)

    deployed, simulated = accuracy(program), accuracy(eager_quantized)
    require(abs(deployed - simulated) <= 0.01, f"the artifact scores {deployed:.4f}, the subnet {simulated:.4f}")
    figures: dict[str, Any] = {"arch": f"{arch.to_json()}, every layer 8-bit", "build_seconds": round(build_seconds, 1),
                               "artifact_mib": round(len(artifact) / 2**20, 2), "val_accuracy_artifact": deployed,
                               "val_accuracy_subnet": simulated}
    eager_float = supernet.extract(space.largest()).eval()
    for batch in ctx.sizes.batches:
        at_batch = replace(target, batch_size=batch)
        inputs = example_input(task.spec, at_batch)
        program_ms, quantized_ms, float_ms = (m.latency_ms for m in measure_many(
            [program, eager_quantized, eager_float], inputs, at_batch, Protocol(passes=ctx.sizes.passes),
            np.random.default_rng(SEED)))
        figures[f"b{batch}"] = {"aoti_int8_ms": round(program_ms, 4), "eager_fake_quant_ms": round(quantized_ms, 4),
                                "eager_fp32_ms": round(float_ms, 4),
                                "speedup_over_eager_fp32": round(float_ms / program_ms, 2)}
    return figures

def aoti_digits(ctx: Context) -> dict[str, Any]:
    from supernet.training.train import load_supernet

    space, task, checkpoint = digits_checkpoint(ctx)
    return aot_inductor_figures(ctx, load_supernet(checkpoint, space, task), space, task, None,
                                staged(space, space.largest()))

def aoti_bert(ctx: Context) -> dict[str, Any]:
    space, task, model = bert_from_checkpoint(ctx)
    return aot_inductor_figures(ctx, model, space, task, ctx.sizes.bert_seq_len)
