"""Standard GAN metrics (FID, KID, precision/recall) with an offline or the Inception extractor."""

from .api import (
    evaluate_generator,
    evaluate_model,
    make_training_evaluator,
    resolve_extractor,
)
from .evaluator import OfflineEvaluator, get_offline_evaluator, train_evaluator
from .fidelity import compute_metrics, fid, kid, precision_recall

__all__ = [
    "OfflineEvaluator",
    "compute_metrics",
    "evaluate_generator",
    "evaluate_model",
    "fid",
    "get_offline_evaluator",
    "kid",
    "make_training_evaluator",
    "precision_recall",
    "resolve_extractor",
    "train_evaluator",
]
