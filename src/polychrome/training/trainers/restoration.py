"""The restoration family (pix2pix): pairs made on the fly from clean pictures.

One step on a batch of clean crops x (B, 3, R, R) in [-1, 1]:

  x_in = the task's input made from x   (sr: smaller by s; inpaint: random free-form holes;
                                         colorize: the luma), drawn from the run's noise
                                         generator, so a resumed run replays it exactly
  G:  lambda_adv * L_adv(D(c, G(x_in))) + lambda_l1 * |G(x_in) - x|_1
  D:  L_adv(D(c, x), D(c, G(x_in)))      (c = the condition: x_in at the output's size)

the conditional GAN objective of Isola et al. 2017 (PatchGAN logits averaged over
patches). For inpaint the L1 term is averaged over the holes only (outside them the
output equals the input by construction). Multi-scale sr models take their scales in
turn, one per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...data.degrade import DEGRADE_MODES, degrade_sr, random_masks
from ...registry import did_you_mean
from ..losses import get_losses
from ..monitor import tile_images
from .base import Batch, Logs, SampleGrid, Trainer, frozen, register_trainer
from .options import TrainerOptions, need


@dataclasses.dataclass(frozen=True)
class RestorationOptions(TrainerOptions):
    """pix2pix's knobs beyond the run config (defaults: the paper's weights). Set them
    under `trainer_options`."""

    lambda_l1: float = 100.0  # L1 to the clean picture (the paper: 100)
    lambda_adv: float = 1.0  # conditional GAN term
    degrade: str = "mild"  # sr inputs: clean | mild (blur, noise, JPEG on some pictures)
    mask_area: tuple[float, float] = (0.05, 0.40)  # inpaint: share of the crop a mask covers

    def check(self, who: str) -> None:
        need(self.degrade in DEGRADE_MODES, who, f"degrade must be one of "
             f"{', '.join(DEGRADE_MODES)}, got {self.degrade!r}"
             f"{did_you_mean(self.degrade, DEGRADE_MODES)}")
        lo, hi = self.mask_area
        need(0 < lo <= hi < 1, who, f"mask_area must satisfy 0 < lo <= hi < 1, got "
             f"{list(self.mask_area)}")
        need(self.lambda_l1 >= 0 and self.lambda_adv >= 0
             and self.lambda_l1 + self.lambda_adv > 0, who,
             "lambda_l1 and lambda_adv must be >= 0, not both 0")


@register_trainer("restoration")
class RestorationTrainer(Trainer):
    options_class = RestorationOptions
    options: RestorationOptions

    def __init__(self, model: nn.Module, config: Any, ctx: Any):
        super().__init__(model, config, ctx)
        opts = self.options
        self.lambda_l1 = opts.lambda_l1
        self.lambda_adv = opts.lambda_adv
        self.degrade = opts.degrade
        self.mask_area = opts.mask_area
        self.G, self.D = model.generator, model.discriminator
        self.scales = model.config.task_scales()
        self.add_optimizer("g", self.G.parameters(), config.lr_g)
        self.add_optimizer("d", self.D.parameters(), config.lr_d)
        self.d_loss_fn, self.g_loss_fn = get_losses(config.loss)

    # -- pairs ---------------------------------------------------------------------------
    def make_input(self, x: torch.Tensor, scale: int, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clean x (B, 3, R, R) -> (the generator's input, the hole mask or None)."""
        task = self.model.config.task
        if task == "sr":
            return degrade_sr(x, scale, generator, mode=self.degrade), None
        if task == "inpaint":
            mask = random_masks(x.shape[0], x.shape[-2], x.shape[-1], generator,
                                area=self.mask_area).to(x.device, x.dtype)
            return self.model.prepare(x, mask), mask
        return self.model.prepare(x), None

    def _patches(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        # -> every patch logit (B * h * w,), so the losses average over patches
        d_in = torch.cat([cond, img], dim=1).float()
        if self.ctx.channels_last:
            d_in = d_in.contiguous(memory_format=torch.channels_last)
        return self.D(d_in).float().flatten()

    def train_step(self, data: Iterator[Batch], step: int) -> Logs:
        x, _ = next(data)  # (B, 3, R, R) clean crops in [-1, 1]
        scale = self.scales[step % len(self.scales)]
        x_in, mask = self.make_input(x, scale, self.ctx.noise_gen)
        cond = self.model.condition(x_in, scale)
        with frozen(self.D), self.autocast():
            fake = self.G(x_in, scale)
            adv, _ = self.g_loss_fn(self._patches(cond, fake))
            err = (fake.float() - x.float()).abs()
            if mask is not None:  # inpaint: the mean over the holes
                l1 = (err * mask).sum() / (mask.sum() * 3).clamp_min(1.0)
            else:
                l1 = err.mean()
            loss = self.lambda_adv * adv + self.lambda_l1 * l1
        self.step_optimizer("g", loss.float(), self.G.parameters())
        with self.autocast():
            real_logits = self._patches(cond, x)
            fake_logits = self._patches(cond, fake.detach())
        d_loss, d_logs = self.d_loss_fn(real_logits, fake_logits)
        self.step_optimizer("d", d_loss, self.D.parameters())
        return {"loss_g": adv.detach(), "l1": l1.detach(), "loss_d": d_loss.detach(),
                "d_real": d_logs["d_real"], "d_fake": d_logs["d_fake"],
                "scale": torch.tensor(float(scale))}

    # -- samples -------------------------------------------------------------------------
    def fixed_inputs(self, packed: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        from ...data.loader import to_float

        n = min(int(self.config.sample_cols), len(packed))
        rows = torch.randperm(len(packed), generator=generator)[:n]
        x = to_float(packed.gather(rows, int(torch.randint(2**31 - 1, (1,),
                                                           generator=generator))))
        out = {"x": x}
        for s in self.scales:  # the same degradation for the whole run
            x_in, _ = self.make_input(x, s, generator)
            out[f"in{s}"] = x_in
        return out

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> SampleGrid:
        """Rows per scale: the input (as a picture), the restored picture, the truth."""
        dev = self.ctx.device
        x = fixed["x"].to(dev)
        rows, samples = [], []
        for s in self.scales:
            x_in = fixed[f"in{s}"].to(dev)
            out = model.generator(x_in, s).float().clamp(-1, 1)
            rows += [_as_picture(x_in, x.shape[-1]), out, x]
            samples.append(out)
        rows = [r.float().clamp(-1, 1).cpu() for r in rows]
        return SampleGrid(tile_images(torch.cat(rows), x.shape[0]),
                          torch.cat(samples).float().cpu())


def _as_picture(x_in: torch.Tensor, side: int) -> torch.Tensor:
    """A generator input shown as RGB at `side` px: sr enlarged (nearest), inpaint with its
    holes black, colorize grey."""
    c = x_in.shape[1]
    if c == 1:
        pic = x_in.expand(-1, 3, -1, -1)
    elif c == 4:
        pic = torch.where(x_in[:, 3:4] > 0.5, torch.full_like(x_in[:, :3], -1.0), x_in[:, :3])
    else:
        pic = x_in
    if pic.shape[-1] != side:
        pic = torch.nn.functional.interpolate(pic, size=(side, side), mode="nearest")
    return pic
