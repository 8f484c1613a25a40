"""Noise -> image trainer (the GAN zoo: mlp-gan, dcgan, wgan-gp, sngan, cgan, stylegan).

One step = `n_critic` D updates (each on a fresh real batch) + one G update.
D sees real and fake batches in separate forwards (BatchNorm-in-D models need
per-batch statistics, as in DCGAN). Fakes reuse the real batch's labels, so
conditional models see the data's label distribution.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..losses import get_losses
from ..monitor import tile_images
from ..regularizers import gradient_penalty, r1_penalty
from .base import Batch, Logs, SampleGrid, Trainer, frozen, register_trainer
from .options import TrainerOptions

MAX_GRID_ROWS = 16  # styles shown in a sample grid (one row each)
SAMPLE_CHUNK = 64  # generate grids in fixed-size chunks: memory bound, result independent of N


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@dataclasses.dataclass(frozen=True)
class NoiseOptions(TrainerOptions):
    """None: every knob of the noise trainer (n_critic, gp_weight, r1_gamma, r1_interval,
    mixing_prob, diffaugment, ...) is a run config field, so any trainer_options key is
    refused (a run-config key there is pointed back to the top level)."""


@register_trainer("noise")
class NoiseTrainer(Trainer):
    options_class = NoiseOptions

    def __init__(self, model: nn.Module, config: Any, ctx: Any):
        super().__init__(model, config, ctx)
        self.G: nn.Module = model.generator
        self.D: nn.Module = model.discriminator
        self.add_optimizer("g", self.G.parameters(), config.lr_g)
        self.add_optimizer("d", self.D.parameters(), config.lr_d)
        self.d_loss_fn, self.g_loss_fn = get_losses(config.loss)
        self.conditional = int(getattr(model.config, "num_domains", 1)) > 1
        # Style mixing (stylegan) happens inside G in training mode, with the global RNG.
        self.g_train_kw: dict[str, Any] = {}
        if config.mixing_prob > 0 and _accepts(self.G.forward, "mixing_prob"):
            self.g_train_kw["mixing_prob"] = config.mixing_prob
        # Sample grids must not consume RNG: per-layer noise fixed where G supports it.
        self.g_eval_kw: dict[str, Any] = {}
        if _accepts(self.G.forward, "noise_mode"):
            self.g_eval_kw["noise_mode"] = "const"

    @property
    def images_per_step(self) -> int:
        return int(self.config.batch_size) * int(self.config.n_critic)

    def _labels(self, y: torch.Tensor) -> torch.Tensor | None:
        return y if self.conditional else None

    def _z(self, n: int) -> torch.Tensor:
        # (n, z_dim) standard normal from this rank's explicit generator
        return self.model.sample_z(n, generator=self.ctx.noise_gen, device=self.ctx.device)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, data: Iterator[Batch], step: int) -> Logs:
        logs: Logs = {}
        y_last = None
        for k in range(int(self.config.n_critic)):
            x, y = next(data)  # (B, 3, R, R) in [-1, 1], (B,) int64
            logs.update(self._d_step(x, y, step, step * int(self.config.n_critic) + k))
            y_last = y
        logs.update(self._g_step(y_last, step))
        if self.ada is not None:
            logs["aug_p"] = torch.tensor(self.ada.p)
        return logs

    def _d_step(self, x: torch.Tensor, y: torch.Tensor, step: int, d_index: int) -> Logs:
        cfg = self.config
        labels = self._labels(y)
        with torch.no_grad(), self.autocast():
            fake = self.G(self._z(x.shape[0]), labels, **self.g_train_kw)  # (B, 3, R, R)
        do_r1 = cfg.r1_gamma > 0 and d_index % int(cfg.r1_interval) == 0
        real = x.detach().requires_grad_(do_r1)
        real_in = self.d_input(real, step)
        fake_in = self.d_input(fake.detach().float(), step)
        with self.autocast():
            real_logits = self.D(real_in, labels).float()  # (B,)
            fake_logits = self.D(fake_in, labels).float()  # (B,)
        loss, logs = self.d_loss_fn(real_logits, fake_logits)
        if cfg.gp_weight > 0:
            def critic(t: torch.Tensor) -> torch.Tensor:
                return self.D(t, labels).float()

            gp_loss, gp_logs = gradient_penalty(critic, real_in, fake_in, weight=cfg.gp_weight,
                                                generator=self.ctx.noise_gen)
            loss = loss + gp_loss
            logs.update(gp_logs)
        if do_r1:
            r1_loss, r1_logs = r1_penalty(real_logits, real, gamma=cfg.r1_gamma,
                                          interval=int(cfg.r1_interval))
            loss = loss + r1_loss
            logs.update(r1_logs)
        self.step_optimizer("d", loss, self.D.parameters())
        self.update_ada(real_logits)
        return logs

    def _g_step(self, y: torch.Tensor, step: int) -> Logs:
        labels = self._labels(y)
        with frozen(self.D):
            with self.autocast():
                fake = self.G(self._z(y.shape[0]), labels, **self.g_train_kw)
            with self.autocast():
                logits = self.D(self.d_input(fake.float(), step), labels).float()
            loss, logs = self.g_loss_fn(logits)
            self.step_optimizer("g", loss, self.G.parameters())
        return logs

    # -- samples -------------------------------------------------------------------------
    def fixed_inputs(self, packed: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One row per style (up to 16), `sample_cols` latents per row, drawn once."""
        rows = min(int(getattr(self.model.config, "num_domains", 1)), MAX_GRID_ROWS)
        cols = int(self.config.sample_cols)
        z = self.model.sample_z(rows * cols, generator=generator, device="cpu")
        fixed = {"z": z}
        if self.conditional:
            fixed["y"] = torch.arange(rows, dtype=torch.int64).repeat_interleave(cols)
        return fixed

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> SampleGrid:
        G = model.generator
        outs = []
        z_all = fixed["z"]
        for i in range(0, z_all.shape[0], SAMPLE_CHUNK):
            z = z_all[i:i + SAMPLE_CHUNK].to(self.ctx.device)
            y = fixed["y"][i:i + SAMPLE_CHUNK].to(self.ctx.device) if "y" in fixed else None
            outs.append(G(z, y, **self.g_eval_kw).float().clamp(-1, 1).cpu())
        samples = torch.cat(outs)  # (rows*cols, 3, R, R) in [-1, 1]
        return SampleGrid(tile_images(samples, int(self.config.sample_cols)), samples)
