"""The training engine: one loop for every model family, trainers per family.

    from polychrome.training import TrainConfig, train
    result = train(TrainConfig(model="dcgan", dataset="emoji", steps=2000))
    result = train(resume=result.run_dir, overrides={"steps": 4000})
"""

from .config import TrainConfig, load_yaml_config, resolve_config
from .export import export_model, register_run_model
from .loop import TrainResult, train
from .trainers import SampleGrid, TrainContext, Trainer, get_trainer_class, register_trainer

__all__ = [
    "SampleGrid",
    "TrainConfig",
    "TrainContext",
    "TrainResult",
    "Trainer",
    "export_model",
    "get_trainer_class",
    "load_yaml_config",
    "register_run_model",
    "register_trainer",
    "resolve_config",
    "train",
]
