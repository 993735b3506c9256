"""Fingerprints of what a small study computes: its trials, accuracies and costs, and the bytes of what it exports.

A refactor that keeps behaviour must keep these exactly. The study (a digits space with every token mixer, a
width per layer, a stage boundary and 4-, 8- and 32-bit layers; accuracy against parameters, so that no timing
steers the search) is trained, searched with the local executor and exported through the CLI in a scratch
folder; printed: each trial's parameters, objective values and attributes (timings, the machine's node and
the arch's JSON text left out: the arch is kept as data, under its current field names), the supernet's and
each exported file's sha256 (`model.pt2` by its weights: the program holds source paths). Compare two checkouts
as `bench/supernet/training_fingerprint.py` says:

    .venv/bin/python bench/search/study_fingerprint.py > new.json
    PYTHONPATH=../elastiq-old .venv/bin/python bench/search/study_fingerprint.py > old.json
    diff old.json new.json
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SPACE = """name: fingerprint
head_dim: 16
local_window: 2
quant_block_size: 16
embed_dim: [32, 64]
depth: [1, 2, 3]
layer:
  num_heads: [1, 2]
  mlp_dim: [32, 64]
  attention: [softmax, linear, local, fourier, conv3]  # the former name: an older checkout reads it too
  bits: [32, 8, 4]
per_layer:
  - layers: [1, 2]
    width: [32, 64]
  - layers: [1]
    reduce: [1, 2]
"""
STUDY = """study: fingerprint
storage: sqlite:///elastiq.db
seed: 0
task: {name: digits}
space: space.yaml
supernet: {steps: 40, batch_size: 32, checkpoint: supernet.pt}
target: {name: cpu-b1, threads: 1, batch_size: 1}
objectives: {accuracy: maximize, params: minimize}
search: {strategy: evolutionary, evaluations: 16, batch_size: 8, executor: local}
"""
LEFT_OUT = ("latency", "seconds", "node", "time")  # attributes that differ between two runs of the same code


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def current_names(value):
    """JSON data with the mixer gene's former name (`attention`) read as its current one."""
    if isinstance(value, dict):
        return {("mixer" if k == "attention" else k): current_names(v) for k, v in value.items()}
    return [current_names(v) for v in value] if isinstance(value, list) else value


def fingerprints(folder: Path) -> dict:
    import optuna

    elastiq = [sys.executable, "-m", "orchestrator.cli"]
    for command in (["train-supernet", "-c", "study.yaml", "--no-progress"],
                    ["search", "-c", "study.yaml", "--no-progress"],
                    ["export", "--storage", "sqlite:///elastiq.db", "--study", "fingerprint", "--out", "models"]):
        subprocess.run(elastiq + command, cwd=folder, check=True, capture_output=True, env={**os.environ})
    trials = {}
    for trial in optuna.load_study(study_name="fingerprint", storage=f"sqlite:///{folder / 'elastiq.db'}").trials:
        attrs = {k: v for k, v in trial.user_attrs.items() if not any(word in k for word in LEFT_OUT)}
        attrs["arch"] = current_names(json.loads(attrs["arch"]))
        if isinstance(attrs.get("metrics"), dict):
            attrs["metrics"] = {k: v for k, v in attrs["metrics"].items() if "seconds" not in k}
        trials[trial.number] = {"state": trial.state.name, "params": trial.params, "values": trial.values,
                                "attrs": attrs}
    files = {"supernet.pt": sha256((folder / "supernet.pt").read_bytes())}
    for path in sorted((folder / "models").rglob("*")):
        name = str(path.relative_to(folder))
        if path.name == "model.pt2":
            with zipfile.ZipFile(path) as archive:
                files[name] = sha256(b"".join(archive.read(n) for n in sorted(archive.namelist()) if "/data/" in n))
        elif path.name == "arch.json":
            files[name] = sha256(json.dumps(current_names(json.loads(path.read_text())), sort_keys=True).encode())
        elif path.is_file() and path.name not in ("manifest.json", "metrics.json"):  # these hold timings
            files[name] = sha256(path.read_bytes())
    return {"trials": trials, "files": files}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="elastiq-study-fingerprint-") as scratch:
        folder = Path(scratch)
        (folder / "space.yaml").write_text(SPACE)
        (folder / "study.yaml").write_text(STUDY)
        print(json.dumps(fingerprints(folder), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
