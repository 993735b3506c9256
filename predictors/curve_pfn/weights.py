"""The PFN's weights on disk: `weights.safetensors` (the network's tensors and the bar distribution's borders)
beside `manifest.json` (the shape, how they were trained, their sha256). Reading checks the sha256 before
anything is parsed, and safetensors holds tensors only: loading never executes code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from predictors.curve_pfn.network import BarDistribution, CurvePFN, PFNShape
from search_space.errors import InputError
from supernet.checkpoint import atomic_write

SHIPPED = Path(__file__).resolve().parent / "shipped"
WEIGHTS, MANIFEST = "weights.safetensors", "manifest.json"
_BORDERS = "bar_distribution.borders"


def save_pfn(directory: Path, model: CurvePFN, borders: torch.Tensor, training: dict) -> dict:
    """Write the weights, then the manifest naming their sha256 (the manifest last: a half-written pair is
    refused when read)."""
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    tensors[_BORDERS] = borders.to(torch.float64).contiguous()
    data = save_tensors(tensors)
    atomic_write(directory / WEIGHTS, lambda f: f.write(data))
    manifest = {"format": "elastiq-curve-pfn-1", "weights": WEIGHTS, "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data), "shape": model.shape.to_dict(), "training": training}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / MANIFEST, lambda f: f.write(text.encode()))
    return manifest


def load_pfn(directory: Path | str | None = None) -> tuple[CurvePFN, BarDistribution, dict]:
    """The network (eval mode), its bar distribution and its manifest; InputError when the manifest is missing
    or malformed, or the weights are missing, truncated or do not hash to the manifest's sha256."""
    directory = Path(directory) if directory is not None else SHIPPED
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        shape = PFNShape(**manifest["shape"])
        expected, name = str(manifest["sha256"]), str(manifest["weights"])
        if not isinstance(manifest["training"]["max_rungs"], int) or manifest["training"]["max_rungs"] < 2:
            raise ValueError("training.max_rungs must be an integer of at least 2")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"learning-curve PFN {directory}: no readable {MANIFEST} ({type(e).__name__}: {e})") from e
    if Path(name).name != name:
        raise InputError(f"learning-curve PFN {directory}: {MANIFEST} names weights outside its folder: {name!r}")
    try:
        data = (directory / name).read_bytes()
    except OSError as e:
        raise InputError(f"learning-curve PFN {directory}: cannot read its weights {name} ({e.strerror})") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise InputError(f"learning-curve PFN {directory}: {name} has sha256 {actual[:16]}..., its manifest says "
                         f"{expected[:16]}... (a changed or truncated file)")
    try:
        tensors = load_tensors(data)
        borders = tensors.pop(_BORDERS)
        model = CurvePFN(shape)
        model.load_state_dict(tensors, strict=True)
        distribution = BarDistribution(borders)
    except (SafetensorError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"learning-curve PFN {directory}: its weights do not fit its manifest's shape "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return model.eval(), distribution, manifest
