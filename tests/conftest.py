"""Shared fixtures: every test runs against its own temporary POLYCHROME_HOME."""

from __future__ import annotations

import os

import pytest
import torch

# Tests build their own tiny models; the shipped defaults are tested where asked for
# (set here too, so servers that module-scoped fixtures start inherit it).
os.environ["POLYCHROME_BUNDLED_MODELS"] = "0"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def polychrome_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("POLYCHROME_HOME", str(home))
    monkeypatch.setenv("POLYCHROME_BUNDLED_MODELS", "0")
    return home


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny kernels on a busy 2-core machine run ~100x
    slower when OpenMP's second thread spins at barriers, and as fast on one when idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
