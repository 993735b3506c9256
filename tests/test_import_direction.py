"""Imports point one way: down DESIGN.md's package table (and `bench/` above it all), down the order of
`orchestrator/`'s rooms (stated in its docstring), and never in a circle between any two modules; a
benchmark script imports shared bench modules, never another script."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orchestrator

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["search_space", "supernet", "predictors", "orchestrator", "bench"]
ALLOWED = {
    "search_space": set(),
    "supernet": {"search_space"},
    "predictors": {"search_space", "supernet"},
    "orchestrator": {"search_space", "supernet", "predictors"},
    "bench": {"search_space", "supernet", "predictors", "orchestrator"},  # the product never imports bench
}
# orchestrator's rooms, highest first: a room imports only rooms after it (and itself)
ROOMS = [["cli"], ["delivery"], ["finetune"], ["search"], ["execution"], ["storage"], ["config", "errors"]]
PRIVATE_OPTUNA = re.compile(r"(?<!self)\._(storage|study_id|trial_id|backend)\b")


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules its imports run (at any depth of its code). `from P import m`, with m a
    module, runs m (P is only entered, and a module's own packages are entered already)."""
    paths = {module_name(root, p): p for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package, up `level - 1`
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            for target in targets:
                entered = [t for t in _ancestors(target) if t not in _ancestors(name) and t != name]
                graph[name] |= {t for t in [*entered, target] if t in paths and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def room_level(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "orchestrator" or len(parts) == 1:
        return None
    return parts[1], next(i for i, rooms in enumerate(ROOMS) if parts[1] in rooms)


def rooms_imported_upward(graph: dict[str, set[str]]) -> list[str]:
    offences = []
    for source, targets in graph.items():
        here = room_level(source)
        for target in targets:
            there = room_level(target)
            if here and there and here[0] != there[0] and there[1] <= here[1]:
                offences.append(f"{source} (room {here[0]}) imports {target} (room {there[0]})")
    return sorted(offences)


def test_imports_only_point_down():
    offences = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for target in imported_packages(path) - ALLOWED[package] - {package}:
                offences.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offences, offences


def test_no_module_imports_itself_through_a_circle():
    assert import_cycles(module_graph(ROOT)) == []


def scripts_imported_by_bench(root: Path) -> list[str]:
    """Bench modules that import a benchmark script (a module with a `__main__` block) instead of a shared one."""
    graph = module_graph(root)
    paths = {module_name(root, p): p for p in (root / "bench").rglob("*.py")}
    scripts = {name for name, path in paths.items() if "__main__" in path.read_text()}
    return sorted(f"{source} imports {target}" for source, targets in graph.items() if source.startswith("bench")
                  for target in targets & scripts)


def test_benchmark_scripts_share_modules_not_each_other():
    assert scripts_imported_by_bench(ROOT) == []
    assert (ROOT / "bench" / "common.py").exists()


def test_a_script_importing_a_script_is_caught(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "one.py").write_text("if __name__ == '__main__':\n    pass\n")
    (tmp_path / "bench" / "two.py").write_text("from bench import one\n")
    for package in PACKAGES[:-1]:
        (tmp_path / package).mkdir()
    assert scripts_imported_by_bench(tmp_path) == ["bench.two imports bench.one"]


def test_orchestrators_rooms_import_downward_in_the_order_its_docstring_states():
    order = " → ".join(", ".join(rooms) for rooms in ROOMS)
    assert order in orchestrator.__doc__
    top = {p.stem if p.is_file() else p.name for p in (ROOT / "orchestrator").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert top == {room for rooms in ROOMS for room in rooms}, "every module or subpackage has its place"
    assert rooms_imported_upward(module_graph(ROOT)) == []
    assert len([p for p in (ROOT / "orchestrator").glob("*.py")]) <= 6


def test_a_deliberate_circle_and_an_upward_import_are_caught(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    with (tmp_path / "search_space" / "arch.py").open("a") as f:
        f.write("\n\ndef _space():\n    from search_space.space import SearchSpace  # back up: a circle\n"
                "    return SearchSpace\n")
    with (tmp_path / "orchestrator" / "storage" / "lease.py").open("a") as f:
        f.write("\nfrom orchestrator.search import driver  # noqa: E402\n")
    graph = module_graph(tmp_path)
    cycles = import_cycles(graph)
    assert any({"search_space.arch", "search_space.space"} <= set(group) for group in cycles), cycles
    assert any("orchestrator.storage.lease" in group for group in cycles), cycles
    assert rooms_imported_upward(graph) == [  # the room's package is entered, then the module runs
        "orchestrator.storage.lease (room storage) imports orchestrator.search (room search)",
        "orchestrator.storage.lease (room storage) imports orchestrator.search.driver (room search)"]


def test_a_relative_import_is_followed(tmp_path):
    (tmp_path / "search_space").mkdir()
    (tmp_path / "search_space" / "__init__.py").write_text("")
    (tmp_path / "search_space" / "a.py").write_text("from . import b\n")
    (tmp_path / "search_space" / "b.py").write_text("from .a import x\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    assert import_cycles(module_graph(tmp_path)) == [["search_space.a", "search_space.b"]]


def test_optunas_private_api_is_used_in_one_module_only():
    allowed = ROOT / "orchestrator" / "storage" / "optuna_private.py"
    users = [f"{p.relative_to(ROOT)}: {line.strip()}"
             for package in [*PACKAGES, "tests"] for p in (ROOT / package).rglob("*.py") if p != allowed
             for line in p.read_text().splitlines() if PRIVATE_OPTUNA.search(line) and "PRIVATE_OPTUNA" not in line]
    assert users == []
    assert PRIVATE_OPTUNA.search(allowed.read_text())


def modules_importing(root: Path, library: str) -> list[str]:
    """The modules (product and bench) whose code imports `library` (at any depth of the module)."""
    found = []
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
                if any(name.split(".")[0] == library for name in names):
                    found.append(str(path.relative_to(root)))
                    break
    return sorted(found)


def test_every_sql_statement_lives_in_the_storage_room():
    storage = str(Path("orchestrator") / "storage")
    outside = [m for m in modules_importing(ROOT, "sqlalchemy") if not m.startswith(storage)]
    assert outside == [], "SQL belongs behind orchestrator/storage's functions"
    assert any(m.startswith(storage) for m in modules_importing(ROOT, "sqlalchemy"))


def test_an_sql_import_outside_storage_is_caught(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    with (tmp_path / "orchestrator" / "delivery" / "status.py").open("a") as f:
        f.write("\n\ndef _rows(engine):\n    from sqlalchemy.orm import Session  # a query outside storage\n"
                "    return Session(engine)\n")
    assert str(Path("orchestrator") / "delivery" / "status.py") in modules_importing(tmp_path, "sqlalchemy")


def test_search_space_loads_no_torch_and_no_optuna():
    modules = [p.stem for p in (ROOT / "search_space").glob("*.py") if p.stem != "__init__"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('search_space.' + m)\n"
            "bad = [m for m in ('torch', 'optuna', 'sklearn') if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
