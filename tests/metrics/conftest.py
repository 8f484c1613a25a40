"""Fixtures for the metrics tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .toydata import write_dataset


@pytest.fixture
def toy_dataset(polychrome_home: Path) -> Path:
    return write_dataset(polychrome_home)
