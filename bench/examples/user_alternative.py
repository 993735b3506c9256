"""The user's alternative to elastiq, as `bench/examples/baselines.py` builds it: a Hugging Face classifier truncated to
its first k layers, fine-tuned (or distilled) alone with plain torch, exported to ONNX and quantized by ONNX Runtime
in two lines; and ONNX Runtime's sessions, accuracy and interleaved latency for every model compared."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch


class TokenInput(torch.nn.Module):
    """A Hugging Face classifier taking elastiq's text input: (batch, tokens, 2) token ids and types."""

    def __init__(self, model, pad_token_id: int):
        super().__init__()
        self.model, self.pad_token_id = model, pad_token_id

    def forward(self, x):
        ids, types = x[..., 0], x[..., 1]
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_token_id).long(),
                          token_type_ids=types).logits


def truncated(path: Path, depth: int, labels: int, seed: int):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)  # the new classifier's initial weights
    hf_logging.set_verbosity_error()  # the dropped layers and the new classifier are announced as warnings
    return AutoModelForSequenceClassification.from_pretrained(
        str(path), num_hidden_layers=depth, num_labels=labels, local_files_only=True, trust_remote_code=False,
        use_safetensors=True)


def fine_tune(model, x, y, settings: dict, seed: int, teacher=None, distill_weight: float = 0.0) -> float:
    """Train `model` (wrapped) on (x, y) for settings["steps"] steps; the seconds it took."""
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    steps, warmup = settings["steps"], settings["warmup_steps"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    batches = torch.Generator().manual_seed(seed)
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(y), (settings["batch_size"],), generator=batches)
        logits = model(x[index])
        loss = F.cross_entropy(logits, y[index])
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(x[index]).softmax(-1)
            loss = (1 - distill_weight) * loss + distill_weight * F.kl_div(logits.log_softmax(-1), soft,
                                                                           reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return time.perf_counter() - started


def to_onnx(model, example, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.cat([example, example]),), dynamo=True, verbose=False,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},))
    program.save(str(path))


def int8(fp32: Path, out: Path, weights: str = "s8") -> None:
    """The two lines a user writes: signed int8 weights (ONNX Runtime's default), or unsigned, which its
    documentation suggests where the CPU lacks VNNI (signed weights there are slower and may saturate)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8)


# ---- running and timing ---------------------------------------------------------------

def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_accuracy(sess, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    name = sess.get_inputs()[0].name
    predicted = np.concatenate([sess.run(None, {name: x[i:i + batch]})[0].argmax(-1) for i in range(0, len(y), batch)])
    return float((predicted == y).mean())


def interleaved_latency(sessions: list, example: np.ndarray, rounds: int, repeats: int, seed: int) -> list[float]:
    """Per session, the median over rounds of the median of `repeats` timed runs; each round visits every
    session once in a random order, so drift of the machine falls on all alike."""
    rng = np.random.default_rng(seed)
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names, strict=True):  # warm-up
        for _ in range(3):
            s.run(None, {n: example})
    medians = [[] for _ in sessions]
    for _ in range(rounds):
        for i in rng.permutation(len(sessions)):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                sessions[i].run(None, {names[i]: example})
                times.append(time.perf_counter() - started)
            medians[i].append(float(np.median(times)) * 1e3)
    return [float(np.median(m)) for m in medians]


# ---- comparing ------------------------------------------------------------------------

