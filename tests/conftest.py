import os
import tempfile
from pathlib import Path

import pytest

import supernet  # noqa: F401 - registers the token mixers' definitions with the space
from search_space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
# what elastiq caches (the runtimes' part graphs) stays within the test session, shared by its processes
os.environ.setdefault("ELASTIQ_CACHE_DIR", tempfile.mkdtemp(prefix="elastiq-test-cache-"))
CONFIGS = ROOT / "configs"


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run where a CUDA GPU is visible, and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.from_yaml(CONFIGS / "spaces" / "tiny.yaml")


@pytest.fixture(scope="session")
def digits_space() -> SearchSpace:
    return SearchSpace.from_yaml(CONFIGS / "spaces" / "digits.yaml")
