"""Measure 1 of the pretrained import: the largest arch of an imported supernet against the Hugging
Face model, max |logit difference| on padded batches of uneven lengths, per family (tiny models built
from a config; a decoder's right-padded batch compared at its real tokens) and for all-MiniLM-L6-v2
(its pooler output: it has no classifier), where `make example-minilm` has extracted it; and for each decoder,
how many of 32 greedy tokens (4 prompts) its ONNX Runtime decoder artifact (KV cache) continues as the torch model.

    python bench/supernet/pretrained_exactness.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from predictors.runtimes import runtime_named  # noqa: E402
from predictors.target import HardwareTarget  # noqa: E402
from supernet.kv_cache import DecoderStep, greedy  # noqa: E402
from supernet.pretrained.importing import full_supernet, open_pretrained  # noqa: E402
from supernet.task_spec import TaskSpec  # noqa: E402
from supernet.tasks.user_data import patches  # noqa: E402
from tests.supernet.pretrained_models import (  # noqa: E402
    DECODERS,
    hf_model,
    save_decoder_model,
    save_text_model,
    save_vit_model,
    tiny_tokenizer,
)

TEXTS = ["the cat sat on the mat", "a dog", "very very big red dog ran fast on the mat", "good"]


def _differences(supernet, x, expected, real: torch.Tensor | None = None) -> dict:
    """Max |difference| of the supernet's largest arch, the model extracted from it and its ONNX Runtime
    program (fp32) from `expected`, over every output (`real`: over these tokens' only)."""
    largest = supernet.space.largest()
    static = supernet.extract(largest).eval()

    def off(logits) -> float:
        return float((logits - expected if real is None else (logits - expected)[real]).abs().max())

    with torch.no_grad():
        program = runtime_named("onnxruntime").deploy(static, x)
        return {"supernet": off(supernet(x, largest)), "extracted": off(static(x)), "onnxruntime": off(program(x))}


def decoder(family: str, folder: Path) -> dict:
    save_decoder_model(folder, family)
    model = open_pretrained(folder)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab - 1, (4, 16), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, 9:], attention[2, 4:], attention[3, 1:] = 0, 0, 0
    spec = TaskSpec("tokens", vocab, 16, vocab, style=model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    with torch.no_grad():
        expected = hf_model(folder)(input_ids=ids, attention_mask=attention).logits
    return {**_differences(supernet, ids, expected, attention.bool()), **_greedy_agreement(supernet, ids[:, :6])}


def _greedy_agreement(supernet, prompt: torch.Tensor, new_tokens: int = 32) -> dict:
    """The tokens that greedy decoding adds to `prompt`, the largest arch's torch step against its ONNX Runtime
    decoder artifact (KV cache): how many of them agree."""
    static = supernet.extract(supernet.space.largest()).eval()
    step = DecoderStep(static).eval()
    program = HardwareTarget(context=prompt.shape[1] + new_tokens).deploy(static, prompt)
    ours, theirs = (greedy(s, step.layout, prompt, new_tokens) for s in (step, program.step))
    return {"greedy_tokens_equal": int((ours == theirs).sum()), "greedy_tokens": ours.numel()}


def text_family(family: str, folder: Path) -> dict:
    save_text_model(folder, family)
    model = open_pretrained(folder)
    tokenizer = tiny_tokenizer(pad_first=family == "bert")[0]
    encoded = tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt", return_token_type_ids=True)
    spec = TaskSpec("text", model.config.vocab_size, 16, 3, style=model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    x = torch.stack([encoded["input_ids"], encoded["token_type_ids"]], dim=-1)
    with torch.no_grad():
        expected = hf_model(folder)(**encoded).logits
    return _differences(supernet, x, expected)


def vit(folder: Path) -> dict:
    save_vit_model(folder)
    model = open_pretrained(folder)
    spec = TaskSpec("features", 48, 16, 3, style=model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    pixels = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf_model(folder)(pixel_values=pixels).logits
    return _differences(supernet, patches(pixels, 4), expected)


def minilm(folder: Path) -> dict | None:
    if not (folder / "model.safetensors").exists():
        return None
    from transformers import AutoModel, AutoTokenizer

    model = open_pretrained(folder)
    hidden = model.dims.hidden
    spec = TaskSpec("text", model.config.vocab_size, 32, hidden, style=model.family.style(model.config))
    supernet, _ = full_supernet(model, spec, seed=0)
    with torch.no_grad():  # an identity classifier: the logits are the pooler's output
        supernet.head.classifier.weight.copy_(torch.eye(hidden))
        supernet.head.classifier.bias.zero_()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoded = tokenizer(["ls - list directory contents", "open, openat, creat - open and possibly create a file",
                         "printf"], padding="max_length", max_length=32, return_tensors="pt",
                        return_token_type_ids=True)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(str(folder)).eval()(**encoded).pooler_output
    x = torch.stack([encoded["input_ids"], encoded["token_type_ids"]], dim=-1)
    return _differences(supernet, x, expected)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"bert (tiny)": text_family("bert", Path(tmp) / "bert"),
                   "roberta (tiny)": text_family("roberta", Path(tmp) / "roberta"),
                   "vit (tiny)": vit(Path(tmp) / "vit"),
                   **{f"{family} (tiny decoder)": decoder(family, Path(tmp) / family) for family in DECODERS},
                   "all-MiniLM-L6-v2 (pooler output)": minilm(ROOT / "runs" / "minilm" / "model")}
    for name, result in results.items():
        print(f"{name}: " + ("not extracted (make example-minilm)" if result is None else
                             ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in result.items())))
    out = ROOT / "bench" / "results" / "pretrained_exactness.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
