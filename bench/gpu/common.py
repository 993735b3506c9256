"""What every section of `make gpu-check` shares: its sizes (full, or the CPU rehearsal's), its context, checks and
helpers."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

SEED = 0
DIGITS_SPACE = ROOT / "configs" / "spaces" / "digits_stages.yaml"  # the demo's space, in stages
PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "onnxruntime", "numpy", "scikit-learn", "pydantic",
            "pytest")


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the full check on a GPU, or a rehearsal of it on a CPU."""

    digits_warmup: int = 50
    digits_steps: int = 300
    digits_cpu_steps: int = 50
    digits_batch: int = 128
    cli_steps: int = 60
    bert: dict = field(default_factory=dict)  # BertConfig overrides (none: BERT-base)
    bert_seq_len: int = 128
    bert_samples: tuple[int, int, int] = (2048, 256, 256)  # train, val, test
    bert_warmup: int = 30
    bert_steps: int = 150
    bert_batch: int = 32
    finetune_steps: int = 100
    batches: tuple[int, ...] = (1, 32)
    passes: int = 7
    min_digits_accuracy: float = 0.5  # the largest digits arch after warm-up + steps (chance: 0.1)


FULL = Sizes()

REHEARSAL = Sizes(digits_warmup=2, digits_steps=3, digits_cpu_steps=2, digits_batch=16, cli_steps=2,
                  bert=dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64),
                  bert_seq_len=16, bert_samples=(64, 32, 32), bert_warmup=3, bert_steps=5, bert_batch=8,
                  finetune_steps=4, batches=(1, 4), passes=3, min_digits_accuracy=0.0)

class CheckFailed(AssertionError):
    """A figure outside what the check accepts."""

def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)

@dataclass
class Context:
    device: str  # "cuda", or "cpu" in a rehearsal
    sizes: Sizes
    scratch: Path  # what one section leaves for a later one: checkpoints, the pretrained model's folder
    out: Path  # where the figures and logs go

    @property
    def rehearsal(self) -> bool:
        return self.device == "cpu"

def peak_memory_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None

def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

def agreement_bound(model, logits) -> float:
    """What two devices may differ by: float32 rounding, plus a rounding step per fake-quantized layer
    (the rule runtimes' artifacts are held to)."""
    from supernet.quant import FULL_PRECISION, QuantLinear

    quantized = sum(isinstance(m, QuantLinear) and m.bits < FULL_PRECISION for m in model.modules())
    scale = max(1.0, float(logits.abs().max()))
    return (1e-3 if quantized == 0 else 0.01 + 0.02 * quantized / 6) * scale

def max_difference(a, b) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())

def same_outputs_on_the_cpu(on_device, checkpoint: Path, space, task, archs, x) -> dict[str, float]:
    """The checkpoint loaded on the CPU against the model it was written from, arch by arch."""
    import torch

    from supernet.training.train import load_supernet

    on_cpu = load_supernet(checkpoint, space, task)
    require(next(on_cpu.parameters()).device.type == "cpu", "the checkpoint did not load on the CPU")
    device = next(on_device.parameters()).device
    differences = {}
    on_device.eval()
    with torch.inference_mode():
        for name, arch in archs.items():
            expected = on_cpu(x, arch)
            got = on_device(x.to(device), arch)
            difference = max_difference(got, expected)
            bound = agreement_bound(on_cpu.extract(arch), expected)
            require(difference <= bound, f"{name}: logits on {device.type} and from the checkpoint on the CPU "
                                         f"differ by {difference:.3g} > {bound:.3g}")
            differences[f"{name}_max_logit_difference"] = difference
    return differences

def training_figures(result, batch: int, archs_per_step: int, device: str) -> dict[str, Any]:
    require(result.skipped_steps == 0, f"{result.skipped_steps} steps skipped (non-finite loss or gradient)")
    return {"steps": result.trained_now, "seconds": round(result.seconds, 3),
            "ms_per_step": round(1e3 * result.seconds / result.trained_now, 2),
            "samples_per_s": round(result.trained_now * batch / result.seconds, 1),
            "arch_passes_per_step": archs_per_step, "peak_memory_gib": peak_memory_gib(device)}

def all_8bit(arch):
    from search_space import Arch

    return Arch(arch.embed_dim, tuple(replace(layer, bits=8) for layer in arch.layers))

def staged(space, arch):
    """`arch` with every stage boundary its space offers, at the largest factor."""
    from search_space import Arch

    return Arch(arch.embed_dim, tuple(layer if space.layers[i].reduce is None
                                      else replace(layer, reduce=max(space.layers[i].reduce))
                                      for i, layer in enumerate(arch.layers)))
