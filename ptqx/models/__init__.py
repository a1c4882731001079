"""Architectures (a small CNN for 8x8 digits / 28x28 Fashion-MNIST, the paper's CIFAR
ResNet-18, any "package.module:callable"), and batched evaluation of many models."""

from .batched import batched_logits, to_inference_form
from .registry import MODELS, build_model, default_model
from .resnet import BasicBlock, ResNet18
from .small_cnn import SmallCNN

__all__ = [
    "MODELS",
    "BasicBlock",
    "ResNet18",
    "SmallCNN",
    "batched_logits",
    "build_model",
    "default_model",
    "to_inference_form",
]
