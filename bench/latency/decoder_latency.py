"""Measure 2 of the decoder LMs (#46): decode latency with a KV cache, measured against predicted, and against
the floor that memory bandwidth sets.

A Llama-style decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU; 8 layers, hidden 256, 8
query and 4 key-value heads of 32, MLP 704, vocabulary 4,096, tied head) is built from a config (its weights'
values do not change its latency) and imported; `space from-model`'s space (causal and sliding mixers, every
depth, head groups and MLP sizes down to a quarter, fp32, int8 and 4-bit layers). On ONNX Runtime, 1 thread,
batch 1, the script measures, side by side in the protocol's shuffled rounds:

- decode latency (one generated token, `DecoderProgram.runner`) of `--archs` random archs (and the largest and
  the smallest) at context 256 and at 1,024, and the latency predictor's cross-validated error on each;
- prefill latency (the whole prompt in one call) of the same archs at 128 tokens;
- decode latency of three archs at contexts 64 to 2,048: does the KV cache show?
- beside each, the memory-bandwidth floor: the bytes one token reads (the artifact's weights, and the KV cache
  its queries see) over this machine's copy bandwidth (numpy, 256 MiB, best of 5);
- the largest arch's decoding with each key-value head serving its query heads in place
  (`grouped_attention`) against the same with the cache repeated per query head first (the form before),
  side by side at each context.

    .venv/bin/python bench/latency/decoder_latency.py [--archs 80]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from predictors.cost import arch_costs, kv_read_bytes  # noqa: E402
from predictors.features import latency_features  # noqa: E402
from predictors.measure import Protocol, measure_many  # noqa: E402
from predictors.models import LatencyPredictor  # noqa: E402
from predictors.runtimes import runtime_named  # noqa: E402
from predictors.runtimes.onnx_runtime import PartGraphs  # noqa: E402
from predictors.target import HardwareTarget  # noqa: E402
from search_space import SearchSpace  # noqa: E402
from supernet.mixers import attention  # noqa: E402
from supernet.mixers.attention import HeadLayout, shared_kv  # noqa: E402
from supernet.pretrained.importing import full_supernet, model_space, open_pretrained  # noqa: E402
from supernet.task_spec import TaskSpec  # noqa: E402

CONTEXTS, PROMPT, SCALING = (256, 1024), 128, (64, 256, 512, 1024, 2048)
OUT = ROOT / "bench" / "results" / "decoder_latency.json"


def decoder(folder: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=32, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    model = open_pretrained(folder)
    spec = TaskSpec("tokens", 4096, PROMPT, 4096, model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    space = SearchSpace.from_dict(model_space(model, mixers=("causal", "sliding")))
    return supernet, space, spec


def bandwidth_gb_s() -> float:
    """This machine's copy bandwidth (bytes read and written), best of 5 copies of 256 MiB."""
    source = np.ones(2**28 // 8)
    target = np.empty_like(source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(5))
    return 2 * source.nbytes / best / 1e9


def _timed(call) -> float:
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


def measured(supernet, space, spec, archs, target: HardwareTarget, prompt: torch.Tensor, rng) -> list:
    programs = [target.deploy(supernet.extract(arch), prompt) for arch in archs]
    return measure_many(programs, prompt, target, Protocol(), rng)


def _repeated_attention(q, key, value, visible, group):
    """The cached attention as it was first built: the cache repeated for every query head, then SDPA."""
    return F.scaled_dot_product_attention(q, *shared_kv(key, value, HeadLayout(group)), attn_mask=visible)


def grouped_against_repeated(supernet, arch, prompt: torch.Tensor, rng) -> dict:
    """The arch's decoder artifact, grouped attention / the cache repeated first, side by side by context."""
    from predictors.runtimes.onnx_decoder import deploy_decoder
    from predictors.runtimes.onnx_runtime import OnnxRuntime

    static = supernet.extract(arch).eval()
    row = {}
    for context in SCALING:
        target = HardwareTarget(name=f"decode-{context}", context=context)
        grouped = deploy_decoder(static, prompt, context)
        with mock.patch.object(attention, "grouped_attention", _repeated_attention), \
                mock.patch.object(OnnxRuntime, "_parts", PartGraphs()), \
                tempfile.TemporaryDirectory() as cache, mock.patch.dict("os.environ", {"ELASTIQ_CACHE_DIR": cache}):
            repeated = deploy_decoder(static, prompt, context)
        now, before = measure_many([grouped, repeated], prompt, target, Protocol(), rng)
        row[str(context)] = {"grouped_ms": now.latency_ms, "repeated_ms": before.latency_ms,
                             "ratio": now.latency_ms / before.latency_ms}
    return row


def cv_error(space, spec, target, archs, latency) -> dict:
    model = LatencyPredictor(random_state=0).fit(latency_features(space, spec, target, archs), np.asarray(latency))
    scores = model.cv_scores_[model.chosen_]
    return {"model": model.chosen_, "cv_mape_pct": scores["mape"], "kendall_tau": scores["kendall_tau"]}


def floor_ms(space, spec, arch, context: int, bandwidth: float) -> float:
    """Bytes one generated token reads (weights as stored, the KV cache its queries see) over the bandwidth."""
    read = arch_costs(space, spec, arch).weight_bytes + kv_read_bytes(space, spec, arch, 1, context)
    return read / (bandwidth * 1e9) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=80)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        supernet, space, spec = decoder(Path(tmp) / "llama")
    archs = [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(args.archs - 2))]
    prompt = torch.randint(0, 4096, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    bandwidth = bandwidth_gb_s()
    result = {"model": "llama-style, 8 layers, hidden 256, 8/4 heads of 32, MLP 704, vocabulary 4096, tied",
              "archs": len(archs), "bandwidth_gb_s": bandwidth, "decode": {}, "scaling": {}}
    started = time.perf_counter()
    for context in CONTEXTS:
        target = HardwareTarget(name=f"decode-{context}", context=context)
        measurements = measured(supernet, space, spec, archs, target, prompt, rng)
        latency = [m.latency_ms for m in measurements]
        floors = [floor_ms(space, spec, a, context, bandwidth) for a in archs]
        steady = [i for i, m in enumerate(measurements) if not m.flagged]  # what the product fits on
        result["decode"][str(context)] = {
            **cv_error(space, spec, target, archs, latency), "latency_ms_range": [min(latency), max(latency)],
            "unflagged": {"archs": len(steady), **cv_error(space, spec, target, [archs[i] for i in steady],
                                                           [latency[i] for i in steady])},
            "largest_ms": latency[0], "smallest_ms": latency[1], "largest_floor_ms": floors[0],
            "over_floor_median": float(np.median(np.asarray(latency) / np.asarray(floors))),
            "halves_gap_median_pct": 100 * float(np.median([m.gap for m in measurements])),
            "flagged": sum(m.flagged for m in measurements)}
        print(f"decode at {context}: {result['decode'][str(context)]}")
    prefill = HardwareTarget(name="prefill", seq_len=PROMPT)
    programs = [runtime_named("onnxruntime").deploy(supernet.extract(a), prompt) for a in archs]
    latency = [m.latency_ms for m in measure_many(programs, prompt, prefill, Protocol(), rng)]
    result["prefill"] = {"tokens": PROMPT, "latency_ms_range": [min(latency), max(latency)],
                         "largest_ms": latency[0], "per_token_largest_ms": latency[0] / PROMPT}
    print(f"prefill of {PROMPT}: {result['prefill']}")
    for arch in archs[:3]:
        row = {}
        for context in SCALING:
            target = HardwareTarget(name=f"decode-{context}", context=context)
            row[str(context)] = {"ms": measured(supernet, space, spec, [arch], target, prompt, rng)[0].latency_ms,
                                 "floor_ms": floor_ms(space, spec, arch, context, bandwidth),
                                 "kv_read_mb": kv_read_bytes(space, spec, arch, 1, context) / 2**20}
        result["scaling"][arch.key] = {"arch": arch.to_dict(), "by_context": row}
        print(f"{arch.key}: " + ", ".join(f"{c}: {v['ms']:.3f} ms (floor {v['floor_ms']:.3f})" for c, v in row.items()))
    result["grouped_against_repeated"] = grouped_against_repeated(supernet, archs[0], prompt, rng)
    print(f"grouped / repeated, largest: {result['grouped_against_repeated']}")
    result["seconds"] = time.perf_counter() - started
    OUT.write_text(json.dumps(result, indent=2))
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
