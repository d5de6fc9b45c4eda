"""Neuron modules that stand in the converted graph where the ANN had a nonlinearity.

In a plain forward pass they compute the exact target g, so the converted graph is an ANN that
matches the original (every pass is tested that way). A :class:`SpikingNetwork` attaches a
runtime that turns each of them into a population of spiking neurons.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..dynamics.targets import Target


class NeuronRuntime(Protocol):
    """What a SpikingNetwork provides to the neuron modules while it runs."""

    def __call__(self, module: "NeuronOp", *currents: torch.Tensor) -> torch.Tensor: ...

    def folded(self, module: "NeuronOp", current: torch.Tensor, divisor: torch.Tensor,
               multiplier: torch.Tensor) -> torch.Tensor:
        """``module(current / divisor) * multiplier`` (a :class:`FoldedNeuronOp`)."""

    def max_chain(self, op: "MaxChainOp", y: torch.Tensor) -> torch.Tensor:
        """The output of a :class:`MaxChainOp` on ``y``."""


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
        return self.target if s is None else self.target.rescaled(s)

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


class FoldedNeuronOp(nn.Module):
    """Simulation form of ``x / divisor -> neuron -> * multiplier`` (what the scaling pass
    writes around a neuron): one module, so the neuron kernel divides the current and
    multiplies the spikes per neuron instead of two extra passes over the tensors. The
    arithmetic is the same (see :func:`signgd_lab.conversion.passes.fold_scales`)."""

    def __init__(self, neuron: NeuronOp, divisor: torch.Tensor, multiplier: torch.Tensor) -> None:
        super().__init__()
        self.neuron = neuron
        self.register_buffer("divisor", divisor)
        self.register_buffer("multiplier", multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        runtime = self.neuron.runtime
        if runtime is None:  # no simulation running: the unfolded computation
            return self.neuron(x / self.divisor) * self.multiplier
        return runtime.folded(self.neuron, x, self.divisor, self.multiplier)


class MaxChainOp(nn.Module):
    """Simulation form of a max-pooling chain: windows w_0..w_n of one tensor y (strided
    slices) and max neurons m_1 = max(w_0, w_1), m_i = max(m_{i-1}, w_i). One module, so the
    runtime can run the whole chain in one kernel that reads the windows in place; without a
    runtime (or where the kernel does not apply) it calls the neurons one by one."""

    def __init__(self, neurons: list[NeuronOp], windows: list[tuple]) -> None:
        super().__init__()
        self.chain = list(neurons)  # a plain list: the neurons stay owned by the graph
        self.windows = list(windows)  # getitem indices of y, one per window

    def unfused(self, y: torch.Tensor) -> torch.Tensor:
        """The chain neuron by neuron, as in the converted graph."""
        windows = [y[index] for index in self.windows]
        out = self.chain[0](windows[0], windows[1])
        for neuron, window in zip(self.chain[1:], windows[2:]):
            out = neuron(out, window)
        return out

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        runtime = self.chain[0].runtime
        return self.unfused(y) if runtime is None else runtime.max_chain(self, y)
