"""The probe protocol: how probes watch a run of a :class:`SpikingNetwork`.

A probe reads the populations' state between blocks (:meth:`Probe.after_block`), which costs
nothing inside the fused neuron kernels: a run ends a block at every step a probe names in
:meth:`Probe.stops`, so the state read there is the state at that step. Only a probe that needs
every step of a population (a per-step :meth:`Probe.observer`) sends that population down its
step-by-step path.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from ..dynamics.neurons import NeuronState, Observer
from .neuron_ops import NeuronOp

if TYPE_CHECKING:  # pragma: no cover
    from .network import SpikingNetwork


class RunState(Protocol):
    """What a probe can read between blocks (the network's runtime)."""

    def state(self, name: str) -> NeuronState:
        """The current state of population ``name`` (x_hat, v, t, fired)."""

    def decoded(self, name: str) -> torch.Tensor:
        """Population ``name``'s output estimate in the graph's units."""


class Probe:
    """Base class of probes; every method is optional. A probe that reads spike counts
    (``NeuronState.fired``) sets ``counts_spikes = True``."""

    counts_spikes: bool = False

    def start(self, network: "SpikingNetwork", batch: int, steps: int) -> None:
        """Called once before a run of ``steps`` steps on ``batch`` samples."""

    def stops(self) -> Sequence[int]:
        """Steps at which the run must end a block, so :meth:`after_block` sees them."""
        return ()

    def observer(self, name: str, module: NeuronOp) -> Observer | None:
        """A per-step observer of population ``name`` (None: not watched step by step). A
        watched population runs its step-by-step path, slower than its fused kernel."""
        return None

    def after_block(self, steps_done: int, run: RunState) -> None:
        """Called after every simulated block with the number of steps done so far."""

    def finish(self) -> None:
        """Called once after a run (also when it fails)."""
