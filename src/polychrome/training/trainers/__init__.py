"""Trainers, one per model family, chosen by `model.family` through a small registry."""

from . import cyclegan, restoration, stargan  # noqa: F401  (registered on import)
from .base import (
    SampleGrid,
    TrainContext,
    Trainer,
    frozen,
    get_trainer_class,
    list_trainers,
    register_trainer,
)
from .noise import NoiseTrainer

__all__ = [
    "NoiseTrainer",
    "SampleGrid",
    "TrainContext",
    "Trainer",
    "frozen",
    "get_trainer_class",
    "list_trainers",
    "register_trainer",
]
