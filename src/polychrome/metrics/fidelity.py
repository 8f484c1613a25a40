"""FID, KID and precision/recall from feature matrices (any extractor).

Written from the papers, checked against torch-fidelity on the same features
(tests/metrics/test_fidelity.py):
- FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of
  the matrix square root is taken as the sum of sqrt(eigenvalues) of the symmetric PSD
  matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2 and no complex
  rounding noise.
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and std reported).
  Subsets are drawn like torch-fidelity does (numpy RandomState(seed).choice without
  replacement, generated subset then real subset) so numbers agree.
- Precision/recall (Kynkaenniemi et al. 2019): the k-NN radius of each real (resp.
  generated) feature; precision = share of generated features inside some real
  sample's ball, recall = share of real features inside some generated sample's ball.

Features: float tensors or arrays (N, D). Computation is in float64 on the CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ..errors import PolychromeError
from ..registry import Registry


def _as_f64(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {arr.shape}")
    return arr


@dataclasses.dataclass
class FeatureStats:
    """Mean (D,) and covariance (D, D) of a feature set: all FID needs from one side."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_stats(features: torch.Tensor | np.ndarray) -> FeatureStats:
    f = _as_f64(features)
    if f.shape[0] < 2:
        raise PolychromeError(f"FID needs at least 2 samples per set, got {f.shape[0]}",
                              code="too_few_samples")
    return FeatureStats(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), n=f.shape[0])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    diff = a.mu - b.mu
    root_a = _sqrt_psd(a.sigma)
    inner = root_a @ b.sigma @ root_a  # symmetric PSD, eigenvalues = those of Sa Sb
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    fid = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * tr_covmean)
    return max(fid, 0.0)  # tiny negative values are rounding noise around 0


def fid(gen: torch.Tensor | np.ndarray, real: torch.Tensor | np.ndarray) -> float:
    return fid_from_stats(feature_stats(gen), feature_stats(real))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = x.shape[0]
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(gen: torch.Tensor | np.ndarray, real: torch.Tensor | np.ndarray, *,
        subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` random subsets.

    `subset_size` is capped at the smaller set size; it must be at least 2.
    """
    g, r = _as_f64(gen), _as_f64(real)
    m = min(subset_size, g.shape[0], r.shape[0])
    if m < 2:
        raise PolychromeError(f"KID needs at least 2 samples per set, got {g.shape[0]} "
                              f"generated and {r.shape[0]} real", code="too_few_samples")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        gi = g[rng.choice(g.shape[0], m, replace=False)]
        ri = r[rng.choice(r.shape[0], m, replace=False)]
        values[i] = _mmd2_unbiased(gi, ri)
    return float(values.mean()), float(values.std())


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) distance from each row to its k-th nearest other row (self excluded)."""
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values
                      for i in range(0, x.shape[0], chunk)])


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                     chunk: int) -> float:
    hits = [(torch.cdist(points[i:i + chunk], centres) <= radii[None, :]).any(dim=1)
            for i in range(0, points.shape[0], chunk)]
    return float(torch.cat(hits).double().mean())


def precision_recall(gen: torch.Tensor | np.ndarray, real: torch.Tensor | np.ndarray, *,
                     k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """(precision, recall) with k-NN radii (k=3 as in the paper)."""
    g = torch.from_numpy(_as_f64(gen))
    r = torch.from_numpy(_as_f64(real))
    if g.shape[0] <= k or r.shape[0] <= k:
        raise PolychromeError(f"precision/recall with k={k} needs more than {k} samples per "
                              f"set, got {g.shape[0]} generated and {r.shape[0]} real",
                              code="too_few_samples")
    precision = _inside_any_ball(g, r, _knn_radii(r, k, chunk), chunk)
    recall = _inside_any_ball(r, g, _knn_radii(g, k, chunk), chunk)
    return precision, recall


@dataclasses.dataclass
class MetricInputs:
    """What a metric reads: generated and real features (N, D), and the shared knobs."""

    gen: torch.Tensor | np.ndarray
    real: torch.Tensor | np.ndarray
    real_stats: FeatureStats | None = None  # precomputed statistics of `real` (FID)
    seed: int = 2020
    kid_subsets: int = 100
    kid_subset_size: int = 1000


# name -> function(MetricInputs) -> {figure name: value}; `--metrics fid,kid` picks them.
METRICS: Registry[Callable[[MetricInputs], dict[str, float]]] = Registry(
    "metric", error=PolychromeError, code="bad_request")


@METRICS.register("fid")
def _fid_metric(m: MetricInputs) -> dict[str, float]:
    return {"fid": fid_from_stats(feature_stats(m.gen), m.real_stats or feature_stats(m.real))}


@METRICS.register("kid")
def _kid_metric(m: MetricInputs) -> dict[str, float]:
    mean, std = kid(m.gen, m.real, subsets=m.kid_subsets, subset_size=m.kid_subset_size,
                    seed=m.seed)
    return {"kid_mean": mean, "kid_std": std}


@METRICS.register("pr")
def _pr_metric(m: MetricInputs) -> dict[str, float]:
    precision, recall = precision_recall(m.gen, m.real)
    return {"precision": precision, "recall": recall}


def parse_metrics(metrics: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """"fid,kid" or a sequence -> validated tuple (order kept, duplicates dropped)."""
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for m in (s.strip().lower() for s in items):
        if not m:
            continue
        METRICS.get(m)  # unknown: bad_request naming the closest metric and all of them
        if m not in out:
            out.append(m)
    if not out:
        raise PolychromeError(f"no metric requested; choose from {', '.join(METRICS)}",
                              code="bad_request")
    return tuple(out)


def compute_metrics(gen: torch.Tensor, real: torch.Tensor, metrics: tuple[str, ...], *,
                    real_stats: FeatureStats | None = None, seed: int = 2020,
                    kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict[str, float]:
    """{"fid", "kid_mean", "kid_std", "precision", "recall"} (those asked for)."""
    inputs = MetricInputs(gen, real, real_stats=real_stats, seed=seed, kid_subsets=kid_subsets,
                          kid_subset_size=kid_subset_size)
    out: dict[str, float] = {}
    for m in parse_metrics(metrics):
        out.update(METRICS.get(m)(inputs))
    return out
