"""benchmarks/seed_diversity.py on a tiny untrained stargan: the distances it reports are
the ones it claims (zero for a picture against itself, symmetric, finite), and it refuses a
model or a seed count it cannot measure."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import seed_diversity  # noqa: E402

from polychrome.errors import ConfigError  # noqa: E402
from polychrome.models import create_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("stargan", resolution=16, num_domains=3).eval()
    m.meta["styles"] = ["ink", "neon", "pastel"]
    return m


def test_distances():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    assert seed_diversity.distances(a, a) == pytest.approx((0.0, 0.0), abs=1e-12)
    l1, dssim = seed_diversity.distances(a, b)
    assert (l1, dssim) == pytest.approx(seed_diversity.distances(b, a))
    assert l1 == pytest.approx(np.abs(a.astype(float) - b.astype(float)).mean() / 255)
    assert 0 < l1 < 1 and 0 < dssim <= 2


def test_spread_covers_the_whole_split():
    assert seed_diversity.spread(list(range(10)), 4) == [0, 2, 5, 7]
    assert seed_diversity.spread(list(range(3)), 4) == [0, 1, 2]


def test_measure_reports_seeds_against_styles(model):
    rng = np.random.default_rng(1)
    pictures = [(f"p{i}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                for i in range(2)]
    out = seed_diversity.measure(model, pictures, seeds=3)
    o = out["overall"]
    assert out["styles"] == ["ink", "neon", "pastel"] and out["output_shapes"] == [[16, 16, 3]]
    assert set(out["per_style"]) == set(out["styles"])
    for k in ("seed_l1", "style_l1", "seed_dssim", "style_dssim", "ratio_l1", "ratio_dssim"):
        assert math.isfinite(o[k]) and o[k] >= 0, k
    assert o["style_l1"] > 0 and o["ratio_l1"] == pytest.approx(o["seed_l1"] / o["style_l1"])
    assert seed_diversity.measure(model, pictures, seeds=3) == out  # seeded: the same again
    with pytest.raises(ConfigError):
        seed_diversity.measure(model, pictures, seeds=1)
