"""Architectures for build_model's "package.module:callable" tests."""

from torch import nn


def tiny_mlp(*, num_classes: int, in_channels: int, image_size: int, hidden: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip


def not_a_model(**kwargs):
    return "a string"


NOT_CALLABLE = 3
