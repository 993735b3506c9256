"""Reading an export back: its manifest, trusted only where every file matches its sha256."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.delivery.export.manifest import MANIFEST
from orchestrator.delivery.outdir import OutputError
from supernet.checkpoint import sha256_file


def previous_export(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def files_intact(out: Path, manifest: dict) -> bool:
    files = manifest.get("files", {})
    return bool(files) and all((out / name).is_file() and sha256_file(out / name) == sha
                               for name, sha in files.items())


def verify_export(out: str | Path) -> dict:
    """The manifest of an export whose every file matches its sha256; refuses anything else."""
    out = Path(out)
    manifest = previous_export(out)
    if manifest is None:
        raise OutputError(f"{out} holds no readable {MANIFEST}")
    if not files_intact(out, manifest):
        raise OutputError(f"{out}: a file does not match the sha256 in {MANIFEST}")
    return manifest
