"""A network "nobody here designed", as a user keeps it in a file of their own: batch norm and a residual block.

Loaded by the tests as ``tests/zoo/user_net.py:ResBNNet`` (and ``user_net.py:make_net``), with weights saved by
plain PyTorch, and exported with ``torch.export`` and TorchScript.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResBNNet(nn.Module):
    """A small residual CNN for 1x8x8 images (scikit-learn's digits)."""

    def __init__(self, width: int = 12, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = Residual(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def make_net(width: int = 12) -> nn.Module:
    """A factory, as ``my_pkg.nets:make_net`` would be."""
    return ResBNNet(width=width)
