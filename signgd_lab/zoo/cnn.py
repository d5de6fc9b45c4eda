"""A small CNN with BatchNorm, ReLU and max-pooling (the paper's classic conversion case)."""
from __future__ import annotations

from torch import nn

from .registry import ZooEntry, register_model


def digits_cnn() -> nn.Module:
    """(B, 1, 8, 8) -> (B, 10): 2 x [conv3x3, BN, ReLU, maxpool2], Linear, ReLU, Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),  # 16x4x4
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32x2x2
        nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


register_model(ZooEntry("digits_cnn", digits_cnn, epochs=25,
                        description="Conv-BN-ReLU-MaxPool x2, MLP head"))
