"""Shared fixtures: every test runs against its own temporary POLYCHROME_HOME."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def polychrome_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("POLYCHROME_HOME", str(home))
    return home
