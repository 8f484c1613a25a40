"""Fixtures for the metrics tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polychrome.metrics.evaluator import OfflineEvaluator, evaluator_name, train_evaluator

from .toydata import shapes_packed, write_dataset, write_shapes_dataset

SHAPES_N = 100  # per style: 40 held-out images in all, halves of 20 for the references
EVALUATOR_STEPS = 200  # enough for the shapes set to clear the instrument bar


@pytest.fixture
def toy_dataset(polychrome_home: Path) -> Path:
    return write_dataset(polychrome_home)


@pytest.fixture(scope="session")
def shapes():
    return shapes_packed(SHAPES_N, 16)


@pytest.fixture(scope="session")
def shapes_evaluator(shapes) -> OfflineEvaluator:
    """A usable evaluator of the shapes set, trained once (as the dataset's would be)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny kernels: a second thread only waits on a busy machine
    try:
        return train_evaluator(shapes, name=evaluator_name("shapes", 1, 16),
                               steps=EVALUATOR_STEPS, progress=False)
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def shapes_dataset(polychrome_home: Path, shapes_evaluator: OfflineEvaluator) -> Path:
    """The shapes set as dataset shapes:1, its offline evaluator saved beside it."""
    root = write_shapes_dataset(polychrome_home, n=SHAPES_N, size=16)
    shapes_evaluator.save(root / "evaluator" / "16")
    return root
