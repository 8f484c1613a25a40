"""FID / KID / precision-recall formulas, and agreement with torch-fidelity on the same features."""

from __future__ import annotations

import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from polychrome.errors import PolychromeError
from polychrome.metrics.fidelity import (
    compute_metrics,
    fid,
    kid,
    parse_metrics,
    precision_recall,
)


def feats(n: int, d: int = 32, seed: int = 0, shift: float = 0.0, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


def test_fid_zero_for_identical_sets_and_grows_with_noise():
    real = feats(400)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-8)
    noise = feats(400, seed=9)
    values = [fid(real + s * noise, real) for s in (0.1, 0.3, 1.0, 3.0)]
    assert values == sorted(values) and values[0] > 0
    assert fid(feats(400, shift=1.0), real) > fid(feats(400, shift=0.1), real)


def test_kid_near_zero_for_identical_and_same_distribution():
    real = feats(600)
    shifted, _ = kid(feats(600, seed=1, shift=0.5), real, subsets=20, subset_size=200)
    identical, _ = kid(real, real, subsets=20, subset_size=200)
    same_mean, same_std = kid(feats(600, seed=2), real, subsets=20, subset_size=200)
    assert shifted > 0.05
    assert abs(identical) < 0.2 * shifted
    assert abs(same_mean) < 0.1 * shifted


def test_precision_recall_identical_and_disjoint():
    real = feats(200)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = feats(200, seed=1, shift=100.0)
    assert precision_recall(far, real) == (0.0, 0.0)
    # a generator covering a small part of the real distribution: precise, low recall
    narrow = feats(200, seed=3, scale=0.2)
    precision, recall = precision_recall(narrow, real)
    assert precision > 0.9 and recall < 0.5


def test_agrees_with_torch_fidelity_on_the_same_features():
    gen, real = feats(300, seed=4, shift=0.3, scale=1.2), feats(250, seed=5)
    theirs_fid = fid_statistics_to_metric(fid_features_to_statistics(gen),
                                          fid_features_to_statistics(real), False)
    assert fid(gen, real) == pytest.approx(theirs_fid["frechet_inception_distance"], rel=1e-5)

    theirs_kid = kid_features_to_metric(gen, real, kid_subsets=15, kid_subset_size=100,
                                        rng_seed=7, verbose=False)
    mean, std = kid(gen, real, subsets=15, subset_size=100, seed=7)
    assert mean == pytest.approx(theirs_kid["kernel_inception_distance_mean"], rel=1e-4)
    assert std == pytest.approx(theirs_kid["kernel_inception_distance_std"], rel=1e-3)

    theirs_pr = prc_features_to_metric(gen, real, prc_neighborhood=3, verbose=False)
    precision, recall = precision_recall(gen, real, k=3)
    assert precision == pytest.approx(theirs_pr["precision"], abs=1e-6)
    assert recall == pytest.approx(theirs_pr["recall"], abs=1e-6)


def test_compute_metrics_keys_and_argument_errors():
    gen, real = feats(50, seed=1), feats(60)
    out = compute_metrics(gen, real, ("fid", "kid", "pr"), kid_subsets=5)
    assert set(out) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    assert parse_metrics("fid, KID,fid") == ("fid", "kid")
    with pytest.raises(PolychromeError, match="unknown metric 'is'"):
        parse_metrics("fid,is")
    with pytest.raises(PolychromeError, match="no metric"):
        parse_metrics(" , ")
    with pytest.raises(PolychromeError, match="at least 2"):
        fid(feats(1), real)
    with pytest.raises(PolychromeError, match="more than 3"):
        precision_recall(feats(3), real)
