"""DESIGN.md's package table: imports only point down."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["search_space", "supernet", "predictors", "orchestrator"]
ALLOWED = {
    "search_space": set(),
    "supernet": {"search_space"},
    "predictors": {"search_space", "supernet"},
    "orchestrator": {"search_space", "supernet", "predictors"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_imports_only_point_down():
    offences = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for target in imported_packages(path) - ALLOWED[package] - {package}:
                offences.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offences, offences


def test_search_space_loads_no_torch_and_no_optuna():
    modules = [p.stem for p in (ROOT / "search_space").glob("*.py") if p.stem != "__init__"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('search_space.' + m)\n"
            "bad = [m for m in ('torch', 'optuna', 'sklearn') if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
