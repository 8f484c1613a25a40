"""The translation family (stargan, cyclegan): one registered trainer, one class per model.

The trainer registry picks a trainer by `model.family`; translation models differ
enough (4 networks and style codes vs. two generator/discriminator pairs) that each
has its own class. `TranslationTrainer(model, config, ctx)` builds the one registered
for `model.name` with `@translation_trainer("stargan")`.

Family options that the run config has no field for (loss weights, pool size, the
mapping network's lr, ...) are each model's own typed options class (`options_class`,
built from the run config's `trainer_options`: see options.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ...data.cache import PackedDataset
from ...data.loader import InMemoryLoader, to_float
from ...errors import ConfigError
from ...registry import Registry
from ..distributed import sync_grads
from .base import Trainer, register_trainer

# model name -> its trainer class (a TranslationTrainer subclass)
BY_MODEL: Registry[type[TranslationTrainer]] = Registry("translation model")


def translation_trainer(model_name: str):
    """Class decorator: the trainer for translation model `model_name`."""
    return BY_MODEL.register(model_name)


@register_trainer("translation")
class TranslationTrainer(Trainer):
    """Dispatches to the class registered for the model's name."""

    def __new__(cls, model: nn.Module, config: Any, ctx: Any):
        if cls is TranslationTrainer:
            cls = cls.for_model(getattr(model, "name", ""))
        # Python then runs the subclass's __init__ (the result is an instance of cls).
        return super().__new__(cls)

    @classmethod
    def for_model(cls, model_name: str) -> type[Trainer]:
        return BY_MODEL.get(model_name) if cls is TranslationTrainer else cls

    def __init__(self, model: nn.Module, config: Any, ctx: Any):
        super().__init__(model, config, ctx)
        if getattr(model.config, "channels", 3) != 3:
            raise ConfigError(f"{model.name}: training data is RGB, so the model needs "
                              f"channels=3 (got {model.config.channels})")

    def step_many(self, names: Iterable[str], loss: torch.Tensor,
                  params: dict[str, list[nn.Parameter]]) -> None:
        """One backward of `loss`, then a step of every optimiser in `names`.

        For losses that train several networks with different learning rates (StarGAN
        v2 updates G, F and E from one generator loss). One GradScaler (the first
        optimiser's) scales the shared backward and steps them all.
        """
        names = list(names)
        scaler = self.scalers[names[0]]
        for n in names:
            self.optimizers[n].zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        for n in names:
            ps = params[n]
            sync_grads(ps, self.ctx.env)
            if self.config.grad_clip is not None:
                scaler.unscale_(self.optimizers[n])
                torch.nn.utils.clip_grad_norm_([p for p in ps if p.grad is not None],
                                               self.config.grad_clip)
            scaler.step(self.optimizers[n])
        scaler.update()


def domain_subset(packed: PackedDataset, domain: int) -> PackedDataset:
    rows = torch.nonzero(packed.labels == domain).flatten()
    return packed.subset(rows)


def pick_sources(packed: PackedDataset, n: int, generator: torch.Generator) -> torch.Tensor:
    """n images for sample grids, cycling through the styles: (n, 3, R, R) float in [-1, 1]."""
    queues = [torch.nonzero(packed.labels == d).flatten() for d in range(packed.num_domains)]
    queues = [q[torch.randperm(len(q), generator=generator)] for q in queues if len(q)]
    picks: list[int] = []
    depth = 0
    while len(picks) < n:  # round robin over styles, wrapping inside small ones
        picks += [int(q[depth % len(q)]) for q in queues]
        depth += 1
    picks = picks[:n]
    return to_float(packed.gather(torch.tensor(picks), 0))


class DomainPairLoader:
    """Unpaired batches from two domains: forever() yields (x_a, x_b), (B, 3, R, R) each.

    Two independent seeded loaders (one per domain), so the pairing is random and a
    checkpoint pins both positions exactly.
    """

    def __init__(self, packed: PackedDataset, batch_size: int, *, device: torch.device,
                 seed: int, rank: int = 0, world_size: int = 1):
        self.loaders = []
        for d in (0, 1):
            sub = domain_subset(packed, d)
            if len(sub) < batch_size * world_size:
                raise ConfigError(f"style {packed.domains[d]!r} has {len(sub)} image(s): too "
                                  f"few for batches of {batch_size} x {world_size} process(es)")
            self.loaders.append(InMemoryLoader(sub, batch_size, device=device, seed=seed + d,
                                               shuffle=True, drop_last=True, rank=rank,
                                               world_size=world_size))

    def forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            (x_a, _), (x_b, _) = (ld.next_batch() for ld in self.loaders)
            yield x_a, x_b

    def state_dict(self) -> dict[str, Any]:
        return {"a": self.loaders[0].state_dict(), "b": self.loaders[1].state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaders[0].load_state_dict(state["a"])
        self.loaders[1].load_state_dict(state["b"])
