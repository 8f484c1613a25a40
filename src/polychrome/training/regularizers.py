"""Discriminator regularisers: gradient penalty, R1, instance noise.

Spectral normalisation is a property of the networks and lives in the models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .losses import LossOut


def _per_sample_grad_norm_sq(grad: torch.Tensor) -> torch.Tensor:
    # (B, ...) -> (B,) squared L2 norm over everything but the batch axis
    return grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> LossOut:
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad_x D(x_hat)||_2 - 1)^2].

    x_hat are random points on the segments between real and fake samples,
    (B, C, H, W) both; `critic` maps (B, C, H, W) -> (B,). The penalty is built
    with create_graph=True so it can be backpropagated into D.
    """
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device,
                     dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = _per_sample_grad_norm_sq(grad.float()).add(1e-12).sqrt()
    gp = (norm - 1.0).pow(2).mean()
    loss = weight * gp
    return loss, {"gp": gp.detach(), "grad_norm": norm.detach().mean()}


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor, *, gamma: float,
               interval: int = 1) -> LossOut:
    """R1 (Mescheder et al. 2018): gamma/2 * E[||grad_x D(x)||^2] on real data.

    `real_inputs` (B, C, H, W) must have requires_grad=True and `real_logits` (B,)
    must be computed from it. Lazy regularisation (Karras et al. 2020) applies
    the penalty every `interval` D steps, scaled by `interval` to keep its
    average strength.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    penalty = _per_sample_grad_norm_sq(grad.float()).mean()
    loss = (gamma / 2.0) * penalty * interval
    return loss, {"r1": penalty.detach()}


class InstanceNoise:
    """Gaussian noise added to every D input, sigma annealed linearly to 0.

    sigma(step) = sigma0 * max(0, 1 - step / anneal_steps) (Sønderby et al. 2016;
    Arjovsky & Bottou 2017): it blurs the supports of real and fake early on.
    Stateless apart from the step, so exact resume needs nothing extra.
    """

    def __init__(self, sigma0: float, anneal_steps: int):
        self.sigma0 = float(sigma0)
        self.anneal_steps = max(1, int(anneal_steps))

    def sigma(self, step: int) -> float:
        return self.sigma0 * max(0.0, 1.0 - step / self.anneal_steps)

    def __call__(self, x: torch.Tensor, step: int, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        s = self.sigma(step)
        if s <= 0.0:
            return x
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return x + s * noise
