"""Shared fixtures: locations of the shared real data, and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

from personalign.data.dimensions import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.fail("shared/data (AlignX dimensions, P-Soups) not found beside the repository")
    return d


@pytest.fixture(scope="session")
def psoups_path(shared_data: Path) -> Path:
    return shared_data / "p-soups" / "friendly_unfriendly.json"


@pytest.fixture(scope="session")
def dimensions_path(shared_data: Path) -> Path:
    return shared_data / "alignx_dimensions.json"
