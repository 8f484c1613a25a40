"""The plug-in point: one `Trainer` per model family, on the shared loop.

A trainer owns only what is specific to its family: its optimisers, one
training step, how to draw fixed inputs and turn them into a sample grid, and
any extra state a checkpoint must carry. The loop (`training.loop`) owns data,
schedules, EMA, checkpoints, monitoring, DDP and the guards.

To add a family (e.g. translation: stargan, cyclegan; paired: pix2pix):

    @dataclasses.dataclass(frozen=True)
    class PairedOptions(TrainerOptions):      # its knobs beyond the run config's fields
        lambda_l1: float = 100.0  # reconstruction weight

    @register_trainer("paired")
    class PairedTrainer(Trainer):
        options_class = PairedOptions         # trainer_options, checked -> self.options
        def __init__(self, model, config, ctx):
            super().__init__(model, config, ctx)
            self.add_optimizer("g", model.generator.parameters(), config.lr_g)
            ...
        def train_step(self, data, step): ...        # next(data) -> (x, y) batches
        def fixed_inputs(self, packed, generator): ...
        def sample_grid(self, model, fixed): ...
        # optional: make_loader (e.g. paired batches), images_per_step, state_json

Every optimiser made with `add_optimizer` is checkpointed, scheduled (its lr
follows the run's schedule) and gets its own GradScaler.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError
from ...registry import Registry
from ..config import TrainConfig
from ..distributed import DistEnv, all_gather_cat, sync_grads
from ..regularizers import InstanceNoise
from .options import TrainerOptions

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, 3, R, R) float in [-1, 1], (B,) int64 labels
Logs = dict[str, torch.Tensor]


@dataclasses.dataclass
class TrainContext:
    """Execution facts a trainer needs; built by the loop."""

    env: DistEnv
    device: torch.device
    noise_gen: torch.Generator  # this rank's explicit RNG for latents and noise (seed + rank)
    amp_dtype: torch.dtype | None = None  # autocast dtype, None = full precision
    channels_last: bool = False


@dataclasses.dataclass
class SampleGrid:
    image: np.ndarray  # (H, W, 3) uint8, the picture written to samples/step-N.png
    samples: torch.Tensor  # (N, 3, R, R) float in [-1, 1], the generated cells (for diversity)


class Trainer(abc.ABC):
    family: ClassVar[str] = ""  # set by register_trainer
    # What the trainer reads from the run config's `trainer_options` (none by default:
    # then every key there is refused).
    options_class: ClassVar[type[TrainerOptions]] = TrainerOptions

    def __init__(self, model: nn.Module, config: TrainConfig, ctx: TrainContext):
        self.model = model
        self.config = config
        self.ctx = ctx
        self.options = self.options_class.build(getattr(config, "trainer_options", None),
                                                who=getattr(model, "name", "") or self.family)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lrs: dict[str, float] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.instance_noise = InstanceNoise(config.instance_noise,
                                            config.instance_noise_steps or config.steps)
        self.ada = None
        if config.diffaugment and config.ada:
            from ...data.augment import AdaptiveAugment

            self.ada = AdaptiveAugment(p=0.0, target=config.ada_target,
                                       speed_imgs=config.ada_speed_imgs,
                                       policy=config.diffaugment)

    @classmethod
    def for_model(cls, model_name: str) -> type[Trainer]:
        """The class that trains architecture `model_name` (a family with one class per
        model, such as translation, dispatches here)."""
        return cls

    # -- what a family implements ---------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, data: Iterator[Batch], step: int) -> Logs:
        """One training step (step = number of completed steps before it, 0-based).

        Pull as many batches from `data` as the step needs. Returns detached
        scalar tensors (losses and diagnostics); the loop checks them for NaN/Inf.
        """

    @abc.abstractmethod
    def fixed_inputs(self, packed: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Inputs drawn once per run (from `generator`) that every sample grid reuses."""

    @abc.abstractmethod
    def sample_grid(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> SampleGrid:
        """Render `fixed` with `model` (the EMA copy, in eval mode)."""

    def make_loader(self, packed: Any) -> Any:
        """The batch source: anything with forever(), state_dict(), load_state_dict()."""
        from ...data.loader import InMemoryLoader

        return InMemoryLoader(packed, self.config.batch_size, device=self.ctx.device,
                              seed=self.config.seed, shuffle=True, drop_last=True,
                              rank=self.ctx.env.rank, world_size=self.ctx.env.world_size)

    @property
    def images_per_step(self) -> int:
        """Real images consumed per step on this rank (for img/s)."""
        return int(self.config.batch_size)

    def state_json(self) -> dict[str, Any]:
        """Extra JSON state for checkpoints (the base class saves ADA)."""
        return {"ada": self.ada.state_dict()} if self.ada is not None else {}

    def load_state_json(self, state: dict[str, Any]) -> None:
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Extra tensors for checkpoints (none by default)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take back what `state_tensors` saved (nothing by default)."""
        return None

    # -- helpers for subclasses ---------------------------------------------------------
    def add_optimizer(self, name: str, params: Iterable[nn.Parameter], lr: float,
                      betas: Iterable[float] | None = None) -> torch.optim.Optimizer:
        betas = tuple(betas if betas is not None else self.config.betas)
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ConfigError(f"optimiser {name!r} has no trainable parameters")
        opt = make_adam(params, lr, betas)
        self.optimizers[name] = opt
        self.base_lrs[name] = float(lr)
        # Loss scaling only matters for fp16; a disabled scaler is a no-op.
        fp16 = self.ctx.amp_dtype == torch.float16
        self.scalers[name] = torch.amp.GradScaler(self.ctx.device.type, enabled=fp16)
        return opt

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.ctx.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.ctx.amp_dtype)

    def step_optimizer(self, name: str, loss: torch.Tensor, params: Iterable[nn.Parameter]) -> None:
        """zero_grad, backward (scaled), average grads across ranks, clip, step."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        params = list(params)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        sync_grads(params, self.ctx.env)
        if self.config.grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                           self.config.grad_clip)
        scaler.step(opt)
        scaler.update()

    def d_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """What D sees: augmentation (DiffAugment / ADA), then annealed instance noise.

        x: (B, 3, R, R) float in [-1, 1]; the ops are differentiable so G's
        gradient passes through them on the fake branch.
        """
        if self.ada is not None:
            x = self.ada(x)
        elif self.config.diffaugment:
            from ...data.augment import diff_augment

            x = diff_augment(x, self.config.diffaugment, p=1.0)
        x = self.instance_noise(x, step, generator=self.ctx.noise_gen)
        if self.ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def update_ada(self, real_logits: torch.Tensor) -> None:
        """Feed D's real logits to ADA (gathered from every rank so p agrees everywhere)."""
        if self.ada is not None:
            self.ada.update(all_gather_cat(real_logits.detach().float(), self.ctx.env))

    @property
    def aug_p(self) -> float:
        if self.ada is not None:
            return float(self.ada.p)
        return 1.0 if self.config.diffaugment else 0.0


def make_adam(params: list[nn.Parameter], lr: float, betas: tuple[float, ...]
              ) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for the parameters' device.

    Fused Adam is the same update (Kingma & Ba 2015) in one kernel over all tensors
    instead of ~10 elementwise ops per tensor: on a CPU it takes a seventh of the time of
    the default per-tensor loop (a tenth of a DCGAN step at the default config), and it
    is deterministic, so exact resume holds. Only the last bits of a few weights differ
    from the per-tensor loop (another order of float operations).
    """
    kind = params[0].device.type
    fused = kind in FUSED_ADAM_DEVICES and all(
        p.device.type == kind and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas,  # type: ignore[arg-type]
                            fused=True if fused else None)


# Device types whose fused Adam kernel torch has (CPU since torch 2.4).
FUSED_ADAM_DEVICES = ("cpu", "cuda")


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop grads into `module`'s parameters (e.g. D during the G step)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(f)


# family -> Trainer subclass (sets the class's `family`).
TRAINERS: Registry[type[Trainer]] = Registry("model family", plural="families",
                                             name_attr="family")


def register_trainer(family: str):
    """Class decorator: the trainer used for models whose `family` is `family`."""
    return TRAINERS.register(family)


def get_trainer_class(family: str) -> type[Trainer]:
    """The trainer for `family`; a module `training/trainers/<family>.py` is imported on demand."""
    if family not in TRAINERS and isinstance(family, str) and family.isidentifier():
        import importlib

        try:
            importlib.import_module(f"{__package__}.{family}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{family}":
                raise
    return TRAINERS.get(family)


def list_trainers() -> list[str]:
    return TRAINERS.names()
