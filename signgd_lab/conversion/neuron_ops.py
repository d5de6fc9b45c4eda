"""Neuron modules that stand in the converted graph where the ANN had a nonlinearity.

In a plain forward pass they compute the exact target g, so the converted graph is an ANN that
matches the original (every pass is tested that way). A :class:`SpikingNetwork` attaches a
runtime that turns each of them into a population of spiking neurons.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import torch
from torch import nn

from ..dynamics.targets import Target


class NeuronRuntime(Protocol):
    """What a SpikingNetwork provides to the neuron modules while it runs."""

    def __call__(self, module: "NeuronOp", *currents: torch.Tensor) -> torch.Tensor: ...


class NeuronOp(nn.Module):
    """A population of neurons with target ``target`` replacing one ANN op.

    Attributes:
        target: the :class:`~signgd_lab.dynamics.Target` (arity 1 or 2).
        source: what it replaced, e.g. ``"nn.ReLU 'features.1'"`` (for tables and errors).
        role: the part it plays in a decomposition (``"activation"``, ``"max-pool"``,
            ``"layernorm-square"``, ``"softmax-exp"``, ...).
    """

    def __init__(self, target: Target, source: str, role: str = "activation") -> None:
        super().__init__()
        self.target = target
        self.source = source
        self.role = role
        self.runtime: NeuronRuntime | None = None
        self.register_buffer("input_scale", None)

    def set_input_scale(self, scale: torch.Tensor) -> None:
        """Make the neuron compute h(z) = g(scale * z) / scale: with z = x / scale upstream and
        * scale downstream the ANN is unchanged, while the neuron sees z in about [-1, 1]."""
        self.input_scale = scale.detach().clone()

    def simulated_target(self) -> Target:
        """The target the neurons run: ``target``, or its rescaled form h (see above)."""
        s = self.input_scale
        if s is None:
            return self.target
        g = self.target.fn
        return dataclasses.replace(self.target, name=f"{self.target.name}[rescaled]",
                                   fn=lambda z: g(s * z) / s, rule=None)

    def exact(self, *x: torch.Tensor) -> torch.Tensor:
        """The ANN value g(x) (h(x) when an input scale is set)."""
        return self.simulated_target().fn(*x)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        if self.runtime is not None:
            return self.runtime(self, *x)
        return self.exact(*x)

    def extra_repr(self) -> str:
        return f"target={self.target.name}, role={self.role}, source={self.source}"


class MatmulNeuronOp(NeuronOp):
    """x1 @ x2 for two input-dependent tensors: N*K*M product neurons (target ``mul``) whose
    spikes are summed over K. Shapes: x1 (..., N, K), x2 (..., K, M) -> (..., N, M)."""

    def exact(self, *x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x[0], x[1])
