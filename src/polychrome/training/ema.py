"""Exponential moving average of a model's inference networks (usually G).

Averaged weights give visibly better samples than the raw, oscillating
generator (Karras et al. 2018; Yazıcı et al. 2019); they are what a run exports.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` whose `module_names` track the live model.

    Parameters: ema <- beta * ema + (1 - beta) * live. Buffers (BatchNorm
    running stats, StyleGAN's w_avg) are copied verbatim: averaging them is
    meaningless and the live ones are already smooth statistics.

    With `rampup` > 0 the half-life (in steps) of the average is capped at
    `rampup * step` (StyleGAN2-ADA), so early, fast-changing weights do not
    linger in the average. beta is a pure function of the step: exact resume
    needs only the averaged tensors.
    """

    def __init__(self, model: nn.Module, module_names: tuple[str, ...], decay: float,
                 rampup: float = 0.0):
        self.module_names = tuple(module_names)
        self.decay = float(decay)
        self.rampup = float(rampup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def beta(self, step: int) -> float:
        if self.decay <= 0.0:
            return 0.0
        half_life = math.log(0.5) / math.log(self.decay)  # in steps
        if self.rampup > 0.0:
            half_life = min(half_life, step * self.rampup)
        if half_life <= 0.0:
            return 0.0
        return 0.5 ** (1.0 / half_life)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Blend the live `model` into the average after optimiser step `step` (0-based)."""
        beta = self.beta(step)
        for name in self.module_names:
            live, avg = getattr(model, name), getattr(self.model, name)
            for p_avg, p in zip(avg.parameters(), live.parameters(), strict=True):
                # lerp(live, avg, beta) written straight into avg: the same values as
                # computing it aside and copying it in, without the temporary and the copy
                # (elementwise, so reading and writing avg in one pass is safe).
                torch.lerp(p.detach(), p_avg, beta, out=p_avg)
            for b_avg, b in zip(avg.buffers(), live.buffers(), strict=True):
                b_avg.copy_(b)
        return beta

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat `{"<module>.<key>": tensor}` of the averaged networks."""
        out: dict[str, torch.Tensor] = {}
        for name in self.module_names:
            for k, v in getattr(self.model, name).state_dict().items():
                out[f"{name}.{k}"] = v
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.module_names:
            prefix = name + "."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            getattr(self.model, name).load_state_dict(sub, strict=True)
