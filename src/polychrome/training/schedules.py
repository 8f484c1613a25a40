"""Learning-rate schedules: a multiplier of the base lr as a pure function of the step.

Each schedule is a small class with a JSON state (its parameters), so a
checkpoint stores it without pickle and a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..registry import Registry

# kind -> Schedule subclass; the run config's `schedule` picks one.
SCHEDULES: Registry[type[Schedule]] = Registry("schedule", name_attr="kind")


class Schedule:
    """factor(step) in [0, 1]: linear warmup over `warmup_steps`, then `_decay`."""

    kind: ClassVar[str] = ""  # set by SCHEDULES.register

    def __init__(self, total_steps: int, *, warmup_steps: int = 0, min_factor: float = 0.0):
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_factor = float(min_factor)

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.min_factor + (1.0 - self.min_factor) * self._decay(progress)

    def _decay(self, progress: float) -> float:  # progress in [0, 1] -> [0, 1]
        raise NotImplementedError

    def apply(self, optimizer: torch.optim.Optimizer, base_lr: float, step: int) -> float:
        """Set every param group's lr for `step`; returns it."""
        lr = base_lr * self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "min_factor": self.min_factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ConfigError(f"schedule state is {state.get('kind')!r}, expected {self.kind!r}")
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.min_factor = float(state["min_factor"])


@SCHEDULES.register("constant")
class ConstantSchedule(Schedule):
    """The base lr throughout (after any warmup)."""

    def _decay(self, progress: float) -> float:
        return 1.0


@SCHEDULES.register("linear")
class LinearSchedule(Schedule):
    """Linear decay from 1 to min_factor over the steps after warmup."""

    def _decay(self, progress: float) -> float:
        return 1.0 - progress


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Half a cosine from 1 to min_factor (Loshchilov & Hutter 2017, no restarts)."""

    def _decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(kind: str, total_steps: int, *, warmup_steps: int = 0,
                  min_factor: float = 0.0) -> Schedule:
    cls = SCHEDULES.get(kind)  # an unknown kind: ConfigError with the known ones
    return cls(total_steps, warmup_steps=warmup_steps, min_factor=min_factor)


def schedule_from_state(state: dict[str, Any]) -> Schedule:
    sched = make_schedule(state.get("kind", ""), 1)
    sched.load_state_dict(state)
    return sched
