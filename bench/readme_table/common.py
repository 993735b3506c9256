"""What every row of the README's benchmark table uses: the results folder, reading a result, figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

Row = list[str]  # what, elastiq, beside it, bar, command
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
PY = ".venv/bin/python"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def span(front: list[dict]) -> str:
    accuracies = [100 * p["accuracy"] for p in front]
    return f"{min(accuracies):.1f}-{max(accuracies):.1f}%"


def n(value, digits: int = 2) -> str:
    return "not reached" if value is None or (isinstance(value, float) and math.isinf(value)) \
        else f"{value:.{digits}f}"


def boundaries(rows: list[dict]) -> str:
    """The same networks without and with every stage boundary: the b32 speed-ups and accuracy changes."""
    if not rows:
        return ""
    cells = [f"{'largest' if r.get('largest') else r['depth']}: "
             f"{r['one_stage_ms_b32'] / r['every_boundary_ms_b32']:.2f}x "
             f"({100 * (r['every_boundary_accuracy'] - r['one_stage_accuracy']):+.1f} pt)" for r in rows]
    return "; the same networks with every boundary, in the staged supernet, by depth: b32 " + ", ".join(cells)
