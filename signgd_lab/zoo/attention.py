"""A one-block attention model on 2x2 pixel patches, built on nn.MultiheadAttention."""
from __future__ import annotations

import torch
from torch import nn

from .registry import ZooEntry, register_model


class DigitsAttention(nn.Module):
    """(B, 1, 8, 8) -> 16 tokens of 2x2 pixels -> embed -> pre-norm self-attention block with a
    GELU MLP -> mean over tokens -> Linear head (B, 10)."""

    def __init__(self, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 2, stride=2)  # (B, dim, 4, 4)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, 16, dim)
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))  # (B, 10)


register_model(ZooEntry("digits_attention", DigitsAttention, epochs=40,
                        description="patch embed, MultiheadAttention block, GELU MLP"))
