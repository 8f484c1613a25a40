"""Training tests run single-threaded: the machine's 2 cores are shared, and an
oversubscribed OpenMP pool makes tiny convs 50x slower without changing results."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
