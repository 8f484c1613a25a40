"""Standard GAN metrics (FID, KID, precision/recall) with an offline or the Inception extractor."""

from .api import (
    evaluate_generator,
    evaluate_model,
    make_training_evaluator,
    resolve_extractor,
)
from .evaluator import OfflineEvaluator, get_offline_evaluator, train_evaluator
from .fidelity import compute_metrics, fid, kid, precision_recall
from .instrument import EvaluatorUnusable, measure_instrument

__all__ = [
    "EvaluatorUnusable",
    "OfflineEvaluator",
    "compute_metrics",
    "evaluate_generator",
    "evaluate_model",
    "fid",
    "get_offline_evaluator",
    "kid",
    "make_training_evaluator",
    "measure_instrument",
    "precision_recall",
    "resolve_extractor",
    "train_evaluator",
]
