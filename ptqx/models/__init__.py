"""Architectures: a small CNN for 8x8 digits / 28x28 Fashion-MNIST, CIFAR ResNet-18."""

from .small_cnn import SmallCNN

__all__ = ["SmallCNN"]
