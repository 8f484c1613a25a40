"""Augmentation: DiffAugment ops and gradients, ADA's probability controller, classic aug."""

from __future__ import annotations

import json

import pytest
import torch

from polychrome.data.augment import AdaptiveAugment, ClassicAugment, diff_augment
from polychrome.errors import ConfigError


def batch(b: int = 6, res: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, 3, res, res), generator=g) * 2 - 1  # (B, 3, H, W) in [-1, 1]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diff_augment_keeps_shape_and_gradients_flow(policy: str):
    x = batch().requires_grad_(True)
    y = diff_augment(x, policy, generator=gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.equal(y.detach(), x.detach())
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_diff_augment_p0_identity_and_seeded():
    x = batch()
    assert diff_augment(x, p=0.0, generator=gen()) is x
    a = diff_augment(x, generator=gen(5))
    assert torch.equal(a, diff_augment(x, generator=gen(5)))
    assert not torch.equal(a, diff_augment(x, generator=gen(6)))
    # Without a generator it follows the global RNG, which a trainer saves and restores.
    torch.manual_seed(1)
    b1 = diff_augment(x)
    torch.manual_seed(1)
    assert torch.equal(b1, diff_augment(x))
    with pytest.raises(ConfigError):
        diff_augment(x, "color,zoom")
    with pytest.raises(ConfigError):
        diff_augment(x, p=1.5)


def test_color_matches_the_three_sequential_ops():
    # The fused colour pass must equal brightness -> saturation -> contrast done one by one
    # (paper ranges), with each op skipped per sample when its draw is >= p.
    x = batch(b=64)
    y = diff_augment(x, "color", p=0.5, generator=gen(9))
    r = torch.rand((64, 6), generator=gen(9))
    on = r[:, 3:] < 0.5
    ref = x.clone()
    for i in range(64):
        v = ref[i]
        if on[i, 0]:
            v = v + (r[i, 0] - 0.5)
        if on[i, 1]:
            g = v.mean(0, keepdim=True)
            v = (v - g) * (2 * r[i, 1]) + g
        if on[i, 2]:
            v = (v - v.mean()) * (r[i, 2] + 0.5) + v.mean()
        ref[i] = v
    assert on.any(1).sum() < 64 and on.all(1).sum() > 0
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_translation_shifts_whole_pixels_with_zero_fill():
    x = batch(b=32, res=16) * 0.5 + 0.6  # strictly positive, so zero fill is visible
    y = diff_augment(x, "translation", generator=gen(2))
    shifted = 0
    for i in range(x.shape[0]):
        # Find the integer shift that explains the output; |shift| <= 16 / 8 = 2.
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):16 - max(0, dy), max(0, -dx):16 - max(0, dx)]
                ref[:, max(0, dy):16 - max(0, -dy), max(0, dx):16 - max(0, -dx)] = src
                if torch.equal(y[i], ref):
                    found, shifted = True, shifted + (dy != 0 or dx != 0)
        assert found, f"sample {i} is not an integer translation with zero fill"
    assert shifted > 16


def test_cutout_zeroes_a_half_size_square():
    x = batch(b=16, res=16) * 0.5 + 0.6  # no natural zeros
    y = diff_augment(x, "cutout", generator=gen(3))
    for i in range(16):
        hole = y[i, 0] == 0
        assert torch.equal(hole, (y[i] == 0).all(0))  # the same pixels in every channel
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # clipped at borders, at most 8x8
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        assert torch.equal(y[i][:, ~hole], x[i][:, ~hole])
    full = [(y[i, 0] == 0).sum().item() for i in range(16)]
    assert 64 in full  # an unclipped hole is exactly (16/2)^2


def test_per_sample_probability():
    x = batch(b=400, res=8)
    y = diff_augment(x, "cutout", p=0.3, generator=gen(4))
    changed = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


def test_ada_p_rises_when_d_overconfident_and_falls_otherwise():
    ada = AdaptiveAugment(target=0.6, speed_imgs=1000, interval=4)
    assert ada.p == 0.0
    for _ in range(8):  # D says "real" to every real: r_t = 1 > 0.6
        ada.update(torch.full((10, 1), 3.0))
    assert ada.p == pytest.approx(2 * 40 / 1000)  # two adjustments of batch*interval/speed
    assert ada.rt == 1.0
    for _ in range(3):  # a partial interval changes nothing yet
        ada.update(torch.full((10, 1), -3.0))
    assert ada.p == pytest.approx(0.08)
    ada.update(torch.full((10, 1), -3.0))
    assert ada.p == pytest.approx(0.04)
    for _ in range(40):
        ada.update(-torch.ones(10))
    assert ada.p == 0.0  # clamped
    up = AdaptiveAugment(p=0.99, speed_imgs=10, interval=1)
    up.update(torch.ones(10))
    assert up.p == 1.0  # clamped


def test_ada_state_round_trips_through_json_and_resumes_exactly():
    a = AdaptiveAugment(speed_imgs=500, interval=4)
    logits = [torch.randn(8, generator=gen(i)) + 1.0 for i in range(10)]
    for lg in logits[:6]:
        a.update(lg)
    state = json.loads(json.dumps(a.state_dict()))
    b = AdaptiveAugment()
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    for lg in logits[6:]:  # the partial interval resumes where it stopped
        a.update(lg)
        b.update(lg)
    assert a.p == b.p > 0 and a.state_dict() == b.state_dict()
    x = batch()
    assert a(x).shape == x.shape
    assert AdaptiveAugment(p=0.0)(x) is x  # p = 0: no augmentation at all


def test_classic_augment_shapes_range_and_seeding():
    x = batch(b=8, res=16)
    aug = ClassicAugment(flip=True, crop_scale=(0.6, 1.0), rotate_deg=15, jitter=0.2,
                         generator=gen(0))
    y = aug(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    again = ClassicAugment(flip=True, crop_scale=(0.6, 1.0), rotate_deg=15, jitter=0.2,
                           generator=gen(0))(x)
    assert torch.equal(y, again) and not torch.equal(y, x)
    # Flip only: every sample is either itself or its exact mirror, and both occur.
    f = ClassicAugment(flip=True, crop_scale=(1.0, 1.0), generator=gen(1))(batch(b=32))
    src = batch(b=32)
    same = [torch.equal(f[i], src[i]) for i in range(32)]
    mirror = [torch.equal(f[i], src[i].flip(2)) for i in range(32)]
    assert all(s or m for s, m in zip(same, mirror, strict=True)) and any(same) and any(mirror)
    # No-op settings leave the batch as it was (up to resampling round-off).
    ident = ClassicAugment(flip=False, crop_scale=(1.0, 1.0))(x)
    assert torch.allclose(ident, x, atol=1e-5)
    with pytest.raises(ConfigError):
        ClassicAugment(crop_scale=(0.0, 1.0))
