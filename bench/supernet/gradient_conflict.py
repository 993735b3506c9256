"""Which archs pull the shared weights away from the largest's: gradient cosines.

Trains the config's supernet briefly (the students on the labels), then, on
one batch, compares the gradient of the largest arch's loss with the gradient
of archs that differ from it in one dimension only (attention type, bits,
depth, embedding, heads, MLP). A cosine near 1: training that arch also trains
the largest; near 0 or below: it pulls the shared weights elsewhere. Reported
over all weights and per group (Q/K, V/O, MLP, norms, the rest: stem and head).

    .venv/bin/python bench/supernet/gradient_conflict.py --config configs/mnist1d.yaml [--steps 300]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from orchestrator.config import load_study_config
from search_space import Arch, LayerArch
from supernet.model import Supernet
from supernet.tasks import load_task
from supernet.training.train import train_supernet

ROOT = Path(__file__).resolve().parents[2]


def group_of(name: str) -> str:
    if ".query." in name or ".key." in name:
        return "qk"
    if ".value." in name or ".out." in name:
        return "vo"
    if ".mlp." in name:
        return "mlp"
    return "norms" if "norm" in name else "stem_head"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs/mnist1d.yaml"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--out", default=str(ROOT / "bench/results/gradient_conflict.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_study_config(args.config)
    space = config.space
    task = load_task(config.task.name, config.seed, config.task.options)
    settings = replace(config.supernet.to_train_settings(), steps=args.steps, checkpoint_every=10**9, distill=False)
    model = Supernet(space, task.spec, seed=config.seed)
    train_supernet(model, task, settings, seed=config.seed, progress=False)

    x, y = task.split("train")
    index = torch.randint(len(y), (args.batch,), generator=torch.Generator().manual_seed(config.seed + 1))
    x, y = x[index], y[index]
    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())

    def gradient(arch: Arch) -> dict[str, torch.Tensor]:
        grads = torch.autograd.grad(F.cross_entropy(model(x, arch), y), params, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(p)).flatten()
                for n, g, p in zip(names, grads, params, strict=True)}

    largest = space.largest()
    reference = gradient(largest)

    def like_largest(**change) -> Arch:
        layers = tuple(LayerArch(change.get("num_heads", layer.num_heads), change.get("mlp_dim", layer.mlp_dim),
                                 change.get("mixer", layer.mixer), change.get("bits", layer.bits))
                       for layer in largest.layers[:change.get("depth", largest.depth)])
        return Arch(change.get("embed_dim", largest.embed_dim), layers)

    choices = space.layers[0]
    mlp_dims = choices.mlp_dim or tuple(int(r * largest.embed_dim) for r in choices.mlp_ratio)
    variants = {f"mixer {a}": like_largest(mixer=a) for a in space.mixers}
    variants |= {f"bits {b}": like_largest(bits=b) for b in space.bit_widths}
    variants |= {f"depth {d}": like_largest(depth=d) for d in space.depths}
    variants |= {f"embed {e}": like_largest(embed_dim=e) for e in space.embed_dims}
    variants |= {f"heads {h}": like_largest(num_heads=h) for h in choices.num_heads}
    variants |= {f"mlp {m}": like_largest(mlp_dim=m) for m in mlp_dims}

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))

    rows = []
    for label, arch in variants.items():
        grads = gradient(arch)
        row = {"variant": label, "all": cosine(torch.cat(list(reference.values())), torch.cat(list(grads.values())))}
        for group in ("qk", "vo", "mlp", "norms", "stem_head"):
            chosen = [n for n in names if group_of(n) == group]
            row[group] = cosine(torch.cat([reference[n] for n in chosen]), torch.cat([grads[n] for n in chosen]))
        rows.append(row)
        print(f"{label:20s} " + "  ".join(f"{k} {v:+.2f}" for k, v in row.items() if k != "variant"), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": args.config, "steps": args.steps, "batch": args.batch,
                                          "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
