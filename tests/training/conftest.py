"""Training tests run single-threaded: the machine's 2 cores are shared, and an
oversubscribed OpenMP pool makes tiny convs 50x slower without changing results."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):  # tests/conftest.py
    yield
