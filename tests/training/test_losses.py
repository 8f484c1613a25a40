"""Losses and regularisers against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from polychrome.errors import ConfigError
from polychrome.training.losses import LOSSES, get_losses
from polychrome.training.regularizers import InstanceNoise, gradient_penalty, r1_penalty

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_non_saturating_values():
    d, g = get_losses("ns")
    loss_d, logs = d(REAL, FAKE)
    want_d = (sum(softplus(-r) for r in REAL.tolist()) + sum(softplus(f) for f in FAKE.tolist())) / 3
    assert loss_d.item() == pytest.approx(want_d, rel=1e-6)
    assert logs["d_real"].item() == pytest.approx(0.5)
    assert logs["d_fake"].item() == pytest.approx(-0.5)
    loss_g, _ = g(FAKE)
    assert loss_g.item() == pytest.approx(sum(softplus(-f) for f in FAKE.tolist()) / 3, rel=1e-6)


def test_non_saturating_is_stable_for_huge_logits():
    d, g = get_losses("ns")
    loss, _ = d(torch.tensor([1e4]), torch.tensor([-1e4]))
    assert loss.item() == 0.0
    assert torch.isfinite(g(torch.tensor([-1e4]))[0])


def test_hinge_values():
    d, g = get_losses("hinge")
    # relu(1 - [2, -1, .5]) = [0, 2, .5] -> 2.5/3 ; relu(1 + [-3, 0, 1.5]) = [0, 1, 2.5] -> 3.5/3
    assert d(REAL, FAKE)[0].item() == pytest.approx(6.0 / 3)
    assert g(FAKE)[0].item() == pytest.approx(-(-3.0 + 0.0 + 1.5) / 3)


def test_wasserstein_values():
    d, g = get_losses("wgan")
    loss, logs = d(REAL, FAKE)
    assert loss.item() == pytest.approx(FAKE.mean().item() - REAL.mean().item())
    assert logs["w_dist"].item() == pytest.approx(1.0)  # mean(real) - mean(fake) = .5 - -.5
    assert g(FAKE)[0].item() == pytest.approx(0.5)


def test_least_squares_values():
    d, g = get_losses("lsgan")
    # .5*mean((r-1)^2) = .5*(1+4+.25)/3 ; .5*mean(f^2) = .5*(9+0+2.25)/3
    assert d(REAL, FAKE)[0].item() == pytest.approx(0.5 * 5.25 / 3 + 0.5 * 11.25 / 3)
    # .5*mean((f-1)^2) = .5*(16+1+.25)/3
    assert g(FAKE)[0].item() == pytest.approx(0.5 * 17.25 / 3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_d_loss_prefers_separated_logits(name):
    d, g = get_losses(name)
    good = d(torch.full((4,), 3.0), torch.full((4,), -3.0))[0]
    bad = d(torch.full((4,), -3.0), torch.full((4,), 3.0))[0]
    assert good < bad
    assert g(torch.full((4,), 3.0))[0] < g(torch.full((4,), -3.0))[0]


def test_unknown_loss():
    with pytest.raises(ConfigError, match="unknown loss"):
        get_losses("nope")


def _linear_critic(weight: torch.Tensor):
    def critic(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ weight.reshape(-1)

    return critic


def test_gradient_penalty_zero_for_unit_norm_linear_critic():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 * 4 * 4, generator=g)
    w = w / w.norm()
    real, fake = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    loss, logs = gradient_penalty(_linear_critic(w), real, fake, weight=10.0, generator=g)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    assert logs["grad_norm"].item() == pytest.approx(1.0, abs=1e-5)


def test_gradient_penalty_value_and_backprop_into_critic():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, generator=g)
    w = (3.0 * w / w.norm()).requires_grad_(True)  # ||grad|| = 3 -> (3 - 1)^2 = 4
    real, fake = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    loss, _ = gradient_penalty(_linear_critic(w), real, fake, weight=10.0, generator=g)
    assert loss.item() == pytest.approx(40.0, rel=1e-5)
    loss.backward()  # d/dw 10*(||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    want = 20.0 * 2.0 * w.detach() / 3.0
    torch.testing.assert_close(w.grad, want, rtol=1e-4, atol=1e-5)


def test_r1_matches_analytic_value_for_quadratic_discriminator():
    # D(x) = a/2 ||x||^2 -> grad = a x -> R1 = gamma/2 * mean_b a^2 ||x_b||^2
    a, gamma = 1.5, 4.0
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    logits = 0.5 * a * x.pow(2).flatten(1).sum(1)
    loss, logs = r1_penalty(logits, x, gamma=gamma)
    want = gamma / 2 * (a * a * x.detach().pow(2).flatten(1).sum(1)).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    lazy, _ = r1_penalty(0.5 * a * x.pow(2).flatten(1).sum(1), x, gamma=gamma, interval=16)
    assert lazy.item() == pytest.approx(16 * want.item(), rel=1e-5)
    assert logs["r1"].item() == pytest.approx((want / (gamma / 2)).item(), rel=1e-5)


def test_instance_noise_anneals_linearly_to_zero():
    noise = InstanceNoise(0.2, anneal_steps=10)
    assert noise.sigma(0) == pytest.approx(0.2)
    assert noise.sigma(5) == pytest.approx(0.1)
    assert noise.sigma(10) == 0.0 and noise.sigma(50) == 0.0
    x = torch.zeros(2000)
    y = noise(x, 5, generator=torch.Generator().manual_seed(0))
    assert y.std().item() == pytest.approx(0.1, rel=0.1)
    assert noise(x, 10) is x
