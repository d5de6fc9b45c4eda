"""The runtime: what stands behind the neuron modules while a converted network runs.

Two kinds of pass go through it: the forced passes of the correction (every neuron emits 1, then
0: docs/theory.md, section 3), which record what each population receives, and the simulation
blocks, in which each module advances its population (:meth:`NeuronOp.simulate`) and each
max-pool chain runs in one kernel where it can. Between blocks, probes read the populations'
state through :meth:`Runtime.state` and :meth:`Runtime.decoded`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..dynamics import kernels
from ..dynamics.neurons import NeuronState, Observer
from .neuron_ops import MaxPoolChain, NeuronOp

if TYPE_CHECKING:  # pragma: no cover
    from .network import SpikingNetwork


@dataclass
class Correction:
    """Per-population offsets and biases from the all-ones / all-zeros passes (docs/theory.md,
    section 3), keyed like ``SpikingNetwork.neurons``, and the output's."""

    offsets: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    biases: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    out_offset: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None
    largest: int = 1  # most elements any one population reads/writes per sample-step
    total: int = 1  # elements all populations together read/write per sample-step
    state: int = 0  # elements of neuron state (input estimates and membranes) per sample


@dataclass
class _FusedChain:
    """State of a max-pool chain run by the chain kernel: the n neurons' states stacked
    (x1, x2, v: (n, B, S)), their offsets (n, S) and where the windows lie in a sample."""

    state: NeuronState
    offsets: tuple[torch.Tensor, torch.Tensor]
    window: torch.Size  # one window of one sample
    index: torch.Tensor  # kernels.window_index of the windows: (n + 1, S) offsets in a sample


class Runtime:
    """Attached to every neuron module of a network for one pass or one run.

    ``force`` set: a correction pass (each population records its rescaled inputs and emits
    ``force``). Otherwise a simulation: ``etas`` is the current block's step sizes,
    ``observers`` maps population names to per-step observers (those populations run their
    step-by-step path; every other one its fused kernel where one applies) and
    ``count_spikes`` makes every population count its spikes (``NeuronState.fired``).
    """

    def __init__(self, net: "SpikingNetwork", correction: Correction | None = None,
                 force: float | None = None, observers: dict[str, Observer] | None = None,
                 count_spikes: bool = False) -> None:
        self.net = net
        self.correction = correction
        self.force = force
        self.observers = observers or {}
        self.count_spikes = count_spikes
        self.recorded: dict[str, tuple[torch.Tensor, ...]] = {}
        self.states: dict[str, NeuronState] = {}
        self.etas: torch.Tensor | None = None
        self._chains: dict[str, _FusedChain | None] = {}  # chain name -> fused state / None
        self._copies: dict[str, list] = {}  # node -> [its value, contiguous copy, readers left]
        self._views: dict[str, tuple[str, int]] = {}  # chain neuron -> (chain name, index)

    def attach(self) -> None:
        """Stand behind every neuron module and max-pool chain of the network."""
        for module in self.net.population_modules:
            module.runtime = self

    def detach(self) -> None:
        """Leave the modules to compute their exact values again."""
        for module in self.net.population_modules:
            module.runtime = None

    # ------------------------------------------------------------------ module calls
    def __call__(self, module: NeuronOp, *currents: torch.Tensor) -> torch.Tensor:
        name = self.net.neuron_names[id(module)]
        if self.force is not None:
            inputs = module.prepare(*currents)
            self.recorded[name] = tuple(c.detach() for c in inputs)
            return module.forced(self.force, inputs)
        steps = self.etas.shape[0]
        shared = self.net.shared_inputs.get(name)
        if shared is not None:
            currents = tuple(c if node is None else self._contiguous(node, c)
                             for node, c in zip(shared, currents))
        cur = tuple(c.reshape(steps, c.shape[0] // steps, *c.shape[1:]) for c in currents)
        state = self.states.get(name)
        if state is None:
            state = module.initial_state(self.correction.biases[name], cur[0].shape[1])
            state.fired = 0.0 if self.count_spikes else None
            self.states[name] = state
        out = module.simulate(self.net.dynamics, state, cur, self.correction.offsets[name],
                              self.etas, self.observers.get(name))  # (c, B, ...)
        return out.reshape(-1, *out.shape[2:])  # (c * B, ...)

    def _contiguous(self, node: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` of graph node ``node``, which several populations read, as a contiguous
        tensor: a strided one is copied for its first reader of the block and the copy is
        handed to the others (each kernel would otherwise copy it again), then dropped after the
        last one."""
        if value.is_contiguous():
            return value
        entry = self._copies.get(node)
        if entry is None or entry[0] is not value:  # first reader (or a stale entry)
            entry = self._copies[node] = [value, value.contiguous(),
                                          self.net.shared_readers[node]]
        entry[2] -= 1
        if entry[2] == 0:
            del self._copies[node]
        return entry[1]

    def max_chain(self, chain: MaxPoolChain, y: torch.Tensor) -> torch.Tensor:
        """A :class:`MaxPoolChain` on ``y`` (c*B, ...): the whole chain in one kernel that gathers
        the windows from ``y`` through a per-sample index (CPU kernels, neurons not rescaled, no
        per-step observer on them), else neuron by neuron; the same numbers either way."""
        name = self.net.chain_names[id(chain)]
        if self.force is not None or not kernels.usable(y):
            return chain.unfused(y)
        steps = self.etas.shape[0]
        batch = y.shape[0] // steps
        y = y.contiguous()
        if name not in self._chains:  # decided on the first block, for the whole run
            self._chains[name] = self._fuse(name, chain, y, batch)
        fused = self._chains[name]
        if fused is None:
            return chain.unfused(y)
        state = fused.state
        tie = self.net.dynamics.apply_tie_rule(chain.chain[0].simulated_target()).tie_fires
        out, counts = kernels.max_chain_steps(tie, y, fused.index, fused.offsets, *state.x_hat,
                                              state.v, self.etas, self.count_spikes)  # (c, B, S)
        state.t += steps
        if self.count_spikes:
            state.fired = state.fired + counts.sum(1).to(torch.float64)
        return out.reshape(steps * batch, *fused.window)

    def _fuse(self, name: str, chain: MaxPoolChain, y: torch.Tensor, batch: int
              ) -> _FusedChain | None:
        """The stacked state of a chain the kernel can run on blocks like ``y`` (contiguous,
        c*B rows), None when it runs neuron by neuron."""
        names = [f"{name}.chain.{i}" for i in range(len(chain.chain))]
        if any(n in self.observers for n in names):
            return None
        if any(t is not None for m in chain.chain for t in (
                m.in_shift0, m.shape_scale, m.in_scale0, m.in_scale1, m.out_scale)):
            return None  # rescaled neurons (extended): their own kernels, faster (measured)
        where = [chain.window_index(i) for i in range(chain.kernel)]
        index = kernels.window_index(y.shape[1:], where)  # per sample: the same for every block
        window = y[where[0]]
        shape = window.shape[1:]
        corr = self.correction

        def stack(parts: list[torch.Tensor]) -> torch.Tensor:  # each part: one sample, (n, S)
            return torch.stack([torch.broadcast_to(p, (1, *shape)).reshape(-1)
                                for p in parts]).to(window.dtype).contiguous()

        state = NeuronState(tuple(stack([corr.biases[n][i] for n in names])[:, None]
                                  .expand(-1, batch, -1).contiguous() for i in (0, 1)),
                            torch.zeros(len(names), batch, shape.numel(), dtype=window.dtype),
                            fired=torch.zeros(len(names), dtype=torch.float64)
                            if self.count_spikes else None)
        offsets = tuple(stack([corr.offsets[n][i] for n in names]) for i in (0, 1))
        for i, n in enumerate(names):
            self._views[n] = (name, i)
        return _FusedChain(state, offsets, shape, index)

    # ------------------------------------------------------------------ what probes read
    def state(self, name: str) -> NeuronState:
        """The current state of population ``name`` (a view into its chain's stacked state for
        the neurons of a max-pool chain run by the chain kernel)."""
        if name in self._views:
            chain, i = self._views[name]
            stacked = self._chains[chain]
            s, lead = stacked.state, (stacked.state.v.shape[1], *stacked.window)
            return NeuronState(tuple(x[i].view(lead) for x in s.x_hat), s.v[i].view(lead), s.t,
                               None if s.fired is None else s.fired[i])
        return self.states[name]

    def decoded(self, name: str) -> torch.Tensor:
        """Population ``name``'s output estimate in the graph's units."""
        return self.net.neurons[name].decode(self.state(name))
