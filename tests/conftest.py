from pathlib import Path

import pytest

from search_space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.from_yaml(CONFIGS / "spaces" / "tiny.yaml")


@pytest.fixture(scope="session")
def digits_space() -> SearchSpace:
    return SearchSpace.from_yaml(CONFIGS / "spaces" / "digits.yaml")
