"""Fixtures shared by the service tests."""

from __future__ import annotations

import copy

import pytest

# Tiny training settings: 16 px, 8 channels, batch 8 -> a step is milliseconds.
TINY_TRAIN = {"model": "dcgan", "resolution": 16, "batch_size": 8,
              "config": {"model_config": {"width": 8, "z_dim": 16}, "log_every": 1}}


@pytest.fixture
def tiny_train() -> dict:
    return copy.deepcopy(TINY_TRAIN)
