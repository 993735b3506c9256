"""DESIGN decision 9: nothing loaded from a file, a database or the network executes code.

A scan of the product's source: no pickle (nor its relatives), no `torch.load`
without `weights_only=True`, no `numpy.load` with pickles allowed, no unsafe
YAML, no `eval`/`exec`. Ray's own transport pickles between Ray processes; that
is Ray's business, not a loader of ours.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["search_space", "supernet", "predictors", "orchestrator"]
CODE_LOADING_MODULES = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "marshal", "shelve"}


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def offences_in(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names if a.name.split(".")[0] in CODE_LOADING_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in CODE_LOADING_MODULES:
            found.append(f"imports from {node.module}")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in ("eval", "exec"):
                found.append(f"calls {name}")
            elif name == "torch.load":
                weights_only = _keyword(node, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append("torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                allow = _keyword(node, "allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append("numpy.load with pickles allowed")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                found.append(f"calls {name} (use yaml.safe_load)")
    return found


def test_the_product_loads_no_code_from_data():
    offences = [f"{path.relative_to(ROOT)}: {what}" for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                for what in offences_in(path.read_text())]
    assert not offences, offences


def test_the_scan_finds_what_it_looks_for():
    source = ("import pickle\nfrom joblib import load\nimport torch, yaml, numpy as np\n"
              "torch.load('x')\ntorch.load('x', weights_only=False)\nnp.load('x', allow_pickle=True)\n"
              "yaml.load('x')\neval('1')\ntorch.load('x', weights_only=True)\nyaml.safe_load('x')\n")
    assert len(offences_in(source)) == 7
