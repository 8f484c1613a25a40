"""CycleGAN trainer (Zhu et al. 2017), written from the paper.

One step: a generator update on an unpaired batch (a from style 0, b from style 1),

    lambda_adv * (L_adv(D_B(G(a))) + L_adv(D_A(F(b))))
    + lambda_cyc * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
    + lambda_cyc * lambda_id * (|G(b) - b|_1 + |F(a) - a|_1)        (identity)

then a discriminator update of D_A and D_B on real images against fakes drawn from a
history pool of 50 generated images (Shrivastava et al. 2017). PatchGAN outputs are
scored patch by patch (the loss averages over every patch). The learning rate stays
constant for the first `decay_start` of the run and then decays linearly to 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...data.cache import PackedDataset
from ..losses import get_losses
from ..monitor import tile_images
from ..regularizers import r1_penalty
from .base import Logs, SampleGrid, frozen
from .options import TrainerOptions, need
from .translation import (
    DomainPairLoader,
    TranslationTrainer,
    domain_subset,
    pick_sources,
    translation_trainer,
)


class ImagePool:
    """The last `size` generated images; D sees a 50/50 mix of new and remembered fakes.

    Random choices come from the trainer's noise generator with a fixed number of
    draws per query, so a resumed run replays them exactly.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self.images: torch.Tensor | None = None  # (n <= size, C, R, R)

    def query(self, fakes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # fakes (B, C, R, R), detached -> (B, C, R, R) to show D
        if self.size <= 0:
            return fakes
        b = fakes.shape[0]
        dev = generator.device
        swap = torch.rand(b, generator=generator, device=dev).tolist()
        slot = torch.randint(self.size, (b,), generator=generator, device=dev).tolist()
        out = []
        for i in range(b):
            img = fakes[i:i + 1]
            n = 0 if self.images is None else self.images.shape[0]
            if n < self.size:  # filling up: store and show the new image
                self.images = img.clone() if self.images is None else torch.cat([self.images, img])
                out.append(img)
            elif swap[i] > 0.5:  # show an old image, remember the new one in its place
                j = slot[i]
                out.append(self.images[j:j + 1].clone())
                self.images[j] = img[0]
            else:
                out.append(img)
        return torch.cat(out)


@dataclasses.dataclass(frozen=True)
class CycleGANOptions(TrainerOptions):
    """CycleGAN's knobs beyond the run config (defaults: the paper's). Set them under
    `trainer_options`."""

    lambda_adv: float = 2.0  # the shared LSGAN G loss is 1/2 MSE; 2 restores the paper's MSE
    lambda_cyc: float = 10.0  # cycle consistency weight
    lambda_id: float = 0.5  # identity loss weight, as a fraction of lambda_cyc
    pool_size: int = 50  # history of generated images shown to D (0 = none)
    decay_start: float = 0.5  # lr constant for this fraction of the run, then linear to 0

    def check(self, who: str) -> None:
        for key in ("lambda_adv", "lambda_cyc", "lambda_id", "pool_size"):
            value = getattr(self, key)
            need(value >= 0, who, f"{key} must be >= 0, got {value}")
        need(0.0 <= self.decay_start <= 1.0, who,
             f"decay_start must be in [0, 1], got {self.decay_start}")


@translation_trainer("cyclegan")
class CycleGANTrainer(TranslationTrainer):
    options_class = CycleGANOptions
    options: CycleGANOptions

    def __init__(self, model: nn.Module, config: Any, ctx: Any):
        super().__init__(model, config, ctx)
        opts = self.options
        self.G, self.F = model.generator, model.generator_ba  # A -> B, B -> A
        self.D_B, self.D_A = model.discriminator, model.discriminator_a
        self.g_params = [*self.G.parameters(), *self.F.parameters()]
        self.d_params = [*self.D_A.parameters(), *self.D_B.parameters()]
        self.add_optimizer("g", self.g_params, config.lr_g)
        self.add_optimizer("d", self.d_params, config.lr_d)
        self.d_loss_fn, self.g_loss_fn = get_losses(config.loss)
        self.lambda_adv = opts.lambda_adv
        self.lambda_cyc = opts.lambda_cyc
        self.lambda_id = opts.lambda_id
        self.decay_start = opts.decay_start
        self.pool_a = ImagePool(opts.pool_size)  # fakes of style A: F(b)
        self.pool_b = ImagePool(opts.pool_size)  # fakes of style B: G(a)

    def make_loader(self, packed: PackedDataset) -> DomainPairLoader:
        return DomainPairLoader(packed, int(self.config.batch_size), device=self.ctx.device,
                                seed=int(self.config.seed), rank=self.ctx.env.rank,
                                world_size=self.ctx.env.world_size)

    @property
    def images_per_step(self) -> int:
        return 2 * int(self.config.batch_size)  # a batch of each style

    def lr_factor(self, step: int) -> float:
        """1 for the first `decay_start` of the run, then linear to 0 at the last step."""
        total = int(self.config.steps)
        start = int(self.decay_start * total)
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / max(1, total - start))

    # -- one step ------------------------------------------------------------------------
    def train_step(self, data: Iterator[tuple[torch.Tensor, torch.Tensor]], step: int) -> Logs:
        a, b = next(data)  # (B, 3, R, R) in [-1, 1] each, styles 0 and 1
        factor = self.lr_factor(step)
        # The loop has just set this step's lr from the run schedule; decay on top of it.
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= factor
        logs, fake_a, fake_b = self._g_step(a, b, step)
        logs.update(self._d_step(a, b, fake_a, fake_b, step))
        logs["lr_factor"] = torch.tensor(factor)
        if self.ada is not None:
            logs["aug_p"] = torch.tensor(self.ada.p)
        return logs

    def _patches(self, d: nn.Module, x: torch.Tensor, step: int) -> torch.Tensor:
        # (B, 3, R, R) -> every patch logit (B * h * w,), so the losses average over patches
        return d(self.d_input(x.float(), step)).float().flatten()

    def _g_step(self, a: torch.Tensor, b: torch.Tensor, step: int
                ) -> tuple[Logs, torch.Tensor, torch.Tensor]:
        with frozen(self.D_A), frozen(self.D_B), self.autocast():
            fake_b, fake_a = self.G(a), self.F(b)
            adv_b, _ = self.g_loss_fn(self._patches(self.D_B, fake_b, step))
            adv_a, _ = self.g_loss_fn(self._patches(self.D_A, fake_a, step))
            cyc = (self.F(fake_b) - a).abs().mean() + (self.G(fake_a) - b).abs().mean()
            idt = torch.zeros((), device=a.device)
            if self.lambda_id > 0:
                idt = (self.G(b) - b).abs().mean() + (self.F(a) - a).abs().mean()
            loss = (self.lambda_adv * (adv_a + adv_b) + self.lambda_cyc * cyc
                    + self.lambda_cyc * self.lambda_id * idt)
        self.step_optimizer("g", loss.float(), self.g_params)
        logs = {"loss_g": (adv_a + adv_b).detach(), "cyc": cyc.detach(), "idt": idt.detach()}
        return logs, fake_a.detach(), fake_b.detach()

    def _d_step(self, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor,
                fake_b: torch.Tensor, step: int) -> Logs:
        cfg = self.config
        gen = self.ctx.noise_gen
        do_r1 = cfg.r1_gamma > 0 and step % int(cfg.r1_interval) == 0
        real_a, real_b = a.detach().requires_grad_(do_r1), b.detach().requires_grad_(do_r1)
        with self.autocast():
            ra, rb = self._patches(self.D_A, real_a, step), self._patches(self.D_B, real_b, step)
            fa = self._patches(self.D_A, self.pool_a.query(fake_a, gen), step)
            fb = self._patches(self.D_B, self.pool_b.query(fake_b, gen), step)
        loss_a, logs_a = self.d_loss_fn(ra, fa)
        loss_b, logs_b = self.d_loss_fn(rb, fb)
        loss = loss_a + loss_b
        logs = {"loss_d": loss.detach(), "d_real": (logs_a["d_real"] + logs_b["d_real"]) / 2,
                "d_fake": (logs_a["d_fake"] + logs_b["d_fake"]) / 2}
        if do_r1:
            for real, logits in ((real_a, ra), (real_b, rb)):
                r1_loss, r1_logs = r1_penalty(logits, real, gamma=cfg.r1_gamma,
                                              interval=int(cfg.r1_interval))
                loss = loss + r1_loss
                logs["r1"] = logs.get("r1", 0) + r1_logs["r1"] / 2
        self.step_optimizer("d", loss, self.d_params)
        self.update_ada(torch.cat([ra, rb]))
        return logs

    # -- checkpoint extras ---------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = dict(super().state_tensors())
        for name, pool in (("pool_a", self.pool_a), ("pool_b", self.pool_b)):
            if pool.images is not None:
                out[name] = pool.images.detach().cpu().contiguous()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        for name, pool in (("pool_a", self.pool_a), ("pool_b", self.pool_b)):
            t = tensors.get(name)
            pool.images = t.to(self.ctx.device).clone() if t is not None else None

    # -- samples -------------------------------------------------------------------------
    def fixed_inputs(self, packed: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cols = int(self.config.sample_cols)
        return {"a": pick_sources(domain_subset(packed, 0), cols, generator),
                "b": pick_sources(domain_subset(packed, 1), cols, generator)}

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> SampleGrid:
        """Rows: a, G(a), F(G(a)), b, F(b), G(F(b)) — translation and reconstruction."""
        dev = self.ctx.device
        G, F = model.generator, model.generator_ba
        a, b = fixed["a"].to(dev), fixed["b"].to(dev)
        ab, ba = G(a), F(b)
        rows = [a, ab, F(ab), b, ba, G(ba)]
        rows = [r.float().clamp(-1, 1).cpu() for r in rows]
        samples = torch.cat([rows[1], rows[4]])  # the translations, for the diversity monitor
        return SampleGrid(tile_images(torch.cat(rows), a.shape[0]), samples)
