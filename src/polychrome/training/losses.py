"""Adversarial losses as pure functions: logits in, `(loss, logs)` out.

Logits are D's raw outputs, shape (B,), any real value (no sigmoid applied).
Each D loss pushes real logits up and fake logits down; each G loss pushes
fake logits up. Logs hold detached scalar tensors (the loop turns them into
floats only when it logs, so there is no device sync per step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..registry import Registry

Logs = dict[str, torch.Tensor]
LossOut = tuple[torch.Tensor, Logs]


def _d_logs(loss: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> Logs:
    return {"loss_d": loss.detach(), "d_real": real.detach().mean(), "d_fake": fake.detach().mean()}


# -- non-saturating (Goodfellow et al. 2014, the -log D(G(z)) trick) ----------------------
def ns_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossOut:
    # -log sigmoid(r) - log(1 - sigmoid(f)) == softplus(-r) + softplus(f), stable for big logits
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return loss, _d_logs(loss, real_logits, fake_logits)


def ns_g_loss(fake_logits: torch.Tensor) -> LossOut:
    loss = F.softplus(-fake_logits).mean()
    return loss, {"loss_g": loss.detach()}


# -- hinge (Lim & Ye 2017; Miyato et al. 2018) --------------------------------------------
def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossOut:
    loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return loss, _d_logs(loss, real_logits, fake_logits)


def hinge_g_loss(fake_logits: torch.Tensor) -> LossOut:
    loss = -fake_logits.mean()
    return loss, {"loss_g": loss.detach()}


# -- Wasserstein (Arjovsky et al. 2017; pair it with a gradient penalty) -----------------
def wgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossOut:
    loss = fake_logits.mean() - real_logits.mean()
    logs = _d_logs(loss, real_logits, fake_logits)
    logs["w_dist"] = (-loss).detach()  # critic's estimate of the Wasserstein-1 distance
    return loss, logs


def wgan_g_loss(fake_logits: torch.Tensor) -> LossOut:
    loss = -fake_logits.mean()
    return loss, {"loss_g": loss.detach()}


# -- least squares (Mao et al. 2017, targets a=0 fake, b=1 real, c=1 for G) --------------
def lsgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> LossOut:
    loss = 0.5 * (real_logits - 1.0).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()
    return loss, _d_logs(loss, real_logits, fake_logits)


def lsgan_g_loss(fake_logits: torch.Tensor) -> LossOut:
    loss = 0.5 * (fake_logits - 1.0).pow(2).mean()
    return loss, {"loss_g": loss.detach()}


DLoss = Callable[[torch.Tensor, torch.Tensor], LossOut]
GLoss = Callable[[torch.Tensor], LossOut]

# name -> (D loss, G loss); the run config's `loss` picks one.
LOSSES: Registry[tuple[DLoss, GLoss]] = Registry("loss", plural="losses")
LOSSES.add("ns", (ns_d_loss, ns_g_loss))
LOSSES.add("hinge", (hinge_d_loss, hinge_g_loss))
LOSSES.add("wgan", (wgan_d_loss, wgan_g_loss))
LOSSES.add("lsgan", (lsgan_d_loss, lsgan_g_loss))


def get_losses(name: str) -> tuple[DLoss, GLoss]:
    """The (D loss, G loss) pair for a loss name (ConfigError with the known names)."""
    return LOSSES.get(name)
