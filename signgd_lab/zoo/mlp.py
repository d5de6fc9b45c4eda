"""An MLP with GELU, LayerNorm and LeakyReLU (nonlinearities beyond ReLU)."""
from __future__ import annotations

from torch import nn

from .registry import ZooEntry, register_model


def digits_mlp() -> nn.Module:
    """(B, 1, 8, 8) -> (B, 10): Linear, GELU, LayerNorm, Linear, LeakyReLU(0.1), Linear."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 96), nn.GELU(), nn.LayerNorm(96),
        nn.Linear(96, 48), nn.LeakyReLU(0.1), nn.Linear(48, 10))


register_model(ZooEntry("digits_mlp", digits_mlp, epochs=30,
                        description="Linear-GELU-LayerNorm-Linear-LeakyReLU-Linear"))
