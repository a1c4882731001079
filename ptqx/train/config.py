"""Training hyper-parameters: a frozen, validated dataclass with per-dataset defaults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """SGD + cosine training settings.

    Attributes:
        epochs: passes over the model's training indices (>= 1).
        batch_size: examples per step (>= 1); the last batch of an epoch may be smaller.
        lr: peak learning rate (> 0), annealed per step to 0 by a cosine over all steps.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty (>= 0), applied to every parameter as in the paper's code.
        augment: apply the dataset's train-time augmentation.
        nesterov: Nesterov momentum (needs momentum > 0).
        label_smoothing: cross-entropy label smoothing in [0, 1).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    nesterov: bool = False
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        for name in ("lr", "momentum", "weight_decay", "label_smoothing"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: expected a value in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing!r}"
            )
        for name in ("augment", "nesterov"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_dataset(cls, name: str) -> TrainConfig:
        """Defaults per dataset.

        - cifar10, cifar100, tinyimagenet: the paper's settings (SGD lr 0.1, momentum
          0.9, weight decay 5e-4, cosine, batch 128, 100 epochs, flip + crop).
        - digits: small_cnn, batch 64, 20 epochs: a model on half of the 1297 training
          images takes 3-6 s on one busy CPU core and reaches 96-99% test accuracy.
        - fashion-mnist: small_cnn, batch 128, 15 epochs (5000 images: ~7 s per epoch
          on one busy core).
        - npz and anything else: the paper's optimiser with 30 epochs.
        """
        if name in ("cifar10", "cifar100", "tinyimagenet"):
            return cls()
        if name == "digits":
            return cls(epochs=20, batch_size=64)
        if name == "fashion-mnist":
            return cls(epochs=15, batch_size=128)
        return cls(epochs=30)
