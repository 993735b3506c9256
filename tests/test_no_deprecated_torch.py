"""The product builds on no deprecated torch API (DESIGN decision 7): no TorchScript, no torch.ao."""

import re

from tests.conftest import ROOT

PACKAGES = ("search_space", "supernet", "predictors", "orchestrator")
DEPRECATED = re.compile(r"torch\.jit|torch\.ao\b|quantize_dynamic|from torch import jit|torch\.quantization")


def test_no_product_module_names_torchscript_or_torch_ao():
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if DEPRECATED.search(line)]
    assert offenders == []


def test_the_suite_turns_torch_deprecations_into_errors():
    import tomllib

    filters = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert "error::DeprecationWarning:torch.*" in filters
    assert not any(f.startswith("ignore::DeprecationWarning") for f in filters)  # nothing silenced wholesale
