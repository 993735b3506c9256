"""The product's modules and the benchmarks stay readable: none over 400 lines, no function over 80 (tests
are not held to it)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["search_space", "supernet", "predictors", "orchestrator", "bench"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def product_modules():
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_product_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in product_modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_product_function_is_over_80_lines():
    long = {f"{p.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
            for p in product_modules() for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert long == {}
