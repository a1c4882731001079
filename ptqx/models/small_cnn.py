"""A small conv net for grayscale sets (scikit-learn digits 8x8, Fashion-MNIST 28x28).

Three conv-BN-ReLU stages and a linear classifier: small enough to train in seconds on
two cores, and shaped like the paper's ResNet where it matters for PTQ (a stem conv, BN
after every conv, a final ``fc``), so every quantizer path is exercised.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Input [B, in_channels, H, W] float32, output logits [B, num_classes]."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.stem = _conv_bn(in_channels, width, 1)
        self.layer1 = _conv_bn(width, 2 * width, 2)
        self.layer2 = _conv_bn(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
