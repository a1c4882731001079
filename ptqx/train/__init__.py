"""Training: balanced membership masks, configs, SGD + cosine loop, accuracy."""

from .config import TrainConfig
from .loop import evaluate_accuracy, predict, train_model
from .membership import balanced_keep

__all__ = ["TrainConfig", "balanced_keep", "evaluate_accuracy", "predict", "train_model"]
