"""The spiking network: runs a converted graph with neurons in place of its nonlinearities.

One run of max(timestamps) steps yields the decoded output at every requested step ("anytime").
Steps are simulated in blocks: in a block of c steps every affine op runs once on a (c*B)-row
batch and every neuron runs its recurrence over the c steps (docs/theory.md, section 3: no layer
feeds back, so this gives the same numbers as c = 1, the step-by-step mode).
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..dynamics import kernels
from ..dynamics.codec import (DirectEncoder, DirectSignGDEncoder, FloatEncoder, RateDecoder,
                              SignGDDecoder)
from ..dynamics.config import IFDynamics, SignGDDynamics
from ..dynamics.neurons import Drive, IFNeuron, NeuronState, Observer, ProductSumNeurons, SignGDNeuron
from .errors import ConversionError
from .neuron_ops import MatmulNeuronOp, MaxChainOp, NeuronOp
from .passes.fold_scales import fold_scales
from .passes.fuse_max_chains import fuse_max_chains

MODES = ("multistep", "stepwise")
_BLOCK_ELEMENTS = 3 * 2**20  # per-block budget: neuron inputs/outputs of all populations
# (measured on the digits models: 8-32 steps at batch 64 are fastest, see benchmarks/RESULTS.md)


def check_timestamps(timestamps: int | Sequence[int]) -> list[int]:
    """Validate timestamps: positive integers in strictly increasing order."""
    ts = [timestamps] if isinstance(timestamps, int) else list(timestamps)
    if not ts:
        raise ConversionError("timestamps is empty; pass e.g. timestamps=[8, 64]")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, int) and not (
                isinstance(t, float) and float(t).is_integer()):
            raise ConversionError(f"timestamps must be integers, got {t!r}")
        if t <= 0:
            raise ConversionError(f"timestamps must be >= 1, got {t!r}")
    ts = [int(t) for t in ts]
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ConversionError(f"timestamps must be strictly increasing, got {ts}; "
                              f"sort them, e.g. {sorted(set(ts))}")
    return ts


class Probe:
    """Base class of probes: subclasses return an observer for the layers they watch."""

    def observer(self, name: str, module: NeuronOp) -> Observer | None:
        """Observer called after every step of neuron ``name`` (None: not watched)."""
        return None

    def start(self, network: "SpikingNetwork", batch: int, steps: int) -> None:
        """Called once before a run."""

    def after_block(self, steps_done: int) -> None:
        """Called after every simulated block with the number of steps done so far."""

    def finish(self) -> None:
        """Called once after a run (also when it fails)."""


@dataclass
class Correction:
    """Per-neuron offsets and biases from the all-ones / all-zeros passes (docs/theory.md,
    section 3)."""

    offsets: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    biases: dict[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    out_offset: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None
    largest: int = 1  # most elements any one neuron population reads/writes per sample-step
    total: int = 1  # elements all populations together read/write per sample-step
    state: int = 0  # elements of neuron state (input estimates and membranes) per sample


class _Runtime:
    """What the neuron modules call during a run (forced passes or simulation blocks)."""

    def __init__(self, net: "SpikingNetwork", correction: "Correction | None" = None) -> None:
        self.net = net
        self.correction = correction
        self.force: float | None = None
        self.recorded: dict[str, tuple[torch.Tensor, ...]] = {}
        self.states: dict[str, NeuronState] = {}
        self.etas: torch.Tensor | None = None
        self.observers: dict[str, Observer] = {}
        self.chain_offsets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, module: NeuronOp, *currents: torch.Tensor) -> torch.Tensor:
        name = self.net.neuron_names[id(module)]
        if self.force is not None:
            self.recorded[name] = tuple(c.detach() for c in currents)
            if isinstance(module, MatmulNeuronOp):
                return torch.matmul(torch.full_like(currents[0], self.force),
                                    torch.ones_like(currents[1]))
            shape = torch.broadcast_shapes(*(c.shape for c in currents))
            return torch.full(shape, self.force, dtype=currents[0].dtype, device=currents[0].device)
        return self.simulate(name, module, currents)

    def folded(self, module: NeuronOp, current: torch.Tensor, divisor: torch.Tensor,
               multiplier: torch.Tensor) -> torch.Tensor:
        """A :class:`FoldedNeuronOp`: ``module(current / divisor) * multiplier``, with the
        division and multiplication done inside the neuron kernel where it runs."""
        if self.force is not None or isinstance(self.net.dynamics, IFDynamics):
            return self(module, current / divisor) * multiplier
        return self.simulate(self.net.neuron_names[id(module)], module, (current,),
                             divisor, multiplier)

    def max_chain(self, op: MaxChainOp, y: torch.Tensor) -> torch.Tensor:
        """A :class:`MaxChainOp`: the whole chain in one kernel that reads the windows of ``y``
        in place (CPU kernels, signGD dynamics), else neuron by neuron; same numbers."""
        names = [self.net.neuron_names[id(m)] for m in op.chain]
        if self.force is not None or isinstance(self.net.dynamics, IFDynamics) or \
                not kernels.usable(y) or any(n in self.observers for n in names):
            return op.unfused(y)
        y = y.contiguous()
        windows = [y[index] for index in op.windows]  # (c*B, *W) views
        layout = kernels.window_layout(y, windows)
        if layout is None:
            return op.unfused(y)
        steps, shape = self.etas.shape[0], windows[0].shape[1:]
        batch = y.shape[0] // steps
        key = f"{names[0]}/chain"
        state = self.states.get(key)
        if state is None:  # stacked states and offsets of the chain's neurons: (n, B, S)
            corr = self.correction

            def stack(parts: list[torch.Tensor], lead: tuple[int, ...]) -> torch.Tensor:
                return torch.stack([p.expand(*lead, *shape).reshape(*lead, -1) for p in parts])

            state = NeuronState(tuple(stack([corr.biases[n][i] for n in names], (batch,)).clone()
                                      for i in (0, 1)), torch.zeros(len(names), batch, shape.numel(),
                                                                    dtype=y.dtype))
            self.states[key] = state
            self.chain_offsets[key] = tuple(
                stack([corr.offsets[n][i] for n in names], (1,))[:, 0].to(y.dtype).contiguous()
                for i in (0, 1))
        tie = self.net.dynamics.apply_tie_rule(op.chain[0].simulated_target()).tie_fires
        spikes = kernels.max_chain_steps(tie, y, layout, self.chain_offsets[key], *state.x_hat,
                                         state.v, self.etas)  # (c, B, S)
        state.t += steps
        return spikes.reshape(steps * batch, *shape)

    def simulate(self, name: str, module: NeuronOp, currents: tuple[torch.Tensor, ...],
                 divisor: torch.Tensor | None = None, multiplier: torch.Tensor | None = None
                 ) -> torch.Tensor:
        steps = self.etas.shape[0]
        corr = self.correction
        cur = [c.reshape(steps, c.shape[0] // steps, *c.shape[1:]) for c in currents]  # (c, B, ...)
        state = self.states.get(name)
        if state is None:
            state = self._initial_state(module, corr.biases[name], cur[0].shape[1])
            self.states[name] = state
        observer = self.observers.get(name)
        if isinstance(self.net.dynamics, IFDynamics):
            spikes = IFNeuron().run(state, cur[0], self.etas, observer)
        else:
            drives = tuple(Drive(c, o) for c, o in zip(cur, corr.offsets[name]))
            if divisor is not None:
                drives = (Drive(cur[0], corr.offsets[name][0], divisor),)
            if isinstance(module, MatmulNeuronOp):
                spikes = ProductSumNeurons(module.target).run(state, drives, self.etas, observer)
            else:
                target = self.net.dynamics.apply_tie_rule(module.simulated_target())
                spikes = SignGDNeuron(target).run(state, drives, self.etas, observer, multiplier)
        return spikes.reshape(-1, *spikes.shape[2:])  # (c * B, ...)

    @staticmethod
    def _initial_state(module: NeuronOp, biases: tuple[torch.Tensor, ...], batch: int) -> NeuronState:
        """x_hat_0 = bias (per input, expanded over the batch), v_0 = 0."""
        xs = tuple(b.expand(batch, *b.shape[1:]).clone() for b in biases)
        shape = _membrane_shape(module, xs)
        return NeuronState(xs, torch.zeros(shape, dtype=xs[0].dtype, device=xs[0].device))


class SpikingNetwork(nn.Module):
    """A converted network. ``snn(x, timestamps=[8, 64])`` -> (len(timestamps), *ann_out.shape).

    Attributes:
        graph_module: the converted graph; a plain call computes the ANN it came from (exact
            neuron targets), which is what probes compare against.
        dynamics: :class:`SignGDDynamics` or :class:`IFDynamics`.
        neurons: name -> :class:`NeuronOp` for every neuron population.
        offset_sum: how the correction offsets are rounded (:attr:`Recipe.offset_sum`).
    """

    def __init__(self, graph_module: fx.GraphModule, dynamics: SignGDDynamics | IFDynamics,
                 recipe_name: str = "paper", offset_sum: str = "direct") -> None:
        super().__init__()
        self.graph_module = graph_module
        self.dynamics = dynamics
        self.recipe_name = recipe_name
        self.offset_sum = offset_sum
        self.neurons: dict[str, NeuronOp] = {  # in graph (execution) order
            node.target: graph_module.get_submodule(node.target)
            for node in graph_module.graph.nodes if node.op == "call_module"
            and isinstance(graph_module.get_submodule(node.target), NeuronOp)}
        self.neuron_names = {id(m): n for n, m in self.neurons.items()}
        self._corrections: dict[tuple, Correction] = {}
        self._folded: dict[tuple, fx.GraphModule] = {}  # simulation graphs, per device/dtype
        self._example_shape: torch.Size | None = graph_module.meta.get("input_shape")

    # ------------------------------------------------------------------ setup
    @property
    def replaced(self) -> list[dict]:
        """One row per neuron population, in graph order: neuron, target, role and the op it
        replaced."""
        return [dict(neuron=name, target=m.target.name, role=m.role, source=m.source)
                for name, m in self.neurons.items()]

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters and buffers."""
        for t in list(self.graph_module.parameters()) + list(self.graph_module.buffers()):
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the network's parameters."""
        for t in list(self.graph_module.parameters()) + list(self.graph_module.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    def ann(self, x: torch.Tensor) -> torch.Tensor:
        """The converted graph evaluated as an ANN (exact targets)."""
        with torch.no_grad():
            return self.graph_module(x)

    def _attach(self, runtime: _Runtime | None) -> None:
        for m in self.neurons.values():
            m.runtime = runtime

    def correction(self, sample_shape: torch.Size) -> Correction:
        """Offsets and biases for inputs of shape (B, *sample_shape), cached per shape/device."""
        key = (tuple(sample_shape), self.device, self.dtype)
        if key in self._corrections:
            return self._corrections[key]
        runtime = _Runtime(self)
        self._attach(runtime)
        try:
            with torch.no_grad():
                passes = {}
                for value in (1.0, 0.0):
                    runtime.force, runtime.recorded = value, {}
                    x = torch.full((1, *sample_shape), value, dtype=self.dtype, device=self.device)
                    out = self.graph_module(x)
                    if not isinstance(out, torch.Tensor):
                        raise ConversionError(
                            f"the model returns {type(out).__name__}; SpikingNetwork needs a "
                            "single output tensor (wrap the model to return one tensor)")
                    passes[value] = (out, runtime.recorded)
        finally:
            self._attach(None)
        (out1, rec1), (out0, rec0) = passes[1.0], passes[0.0]

        def offset(one: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:  # A(1) + A(0)
            return (one - zero) + 2 * zero if self.offset_sum == "reference" else one + zero

        corr = Correction(
            offsets={n: tuple(offset(a, b) for a, b in zip(rec1[n], rec0[n])) for n in rec1},
            biases=dict(rec0), out_offset=offset(out1, out0), out_bias=out0)
        sizes = [_population(self.neurons[n], c) for n, c in rec0.items()]
        corr.largest, corr.total = max([1] + sizes), max(1, sum(sizes))
        corr.state = sum(_state_size(self.neurons[n], c) for n, c in rec0.items())
        self._corrections[key] = corr
        return corr

    def _simulation_graph(self) -> fx.GraphModule:
        """The converted graph with ``x / m -> neuron -> * m'`` folded into the neurons and the
        max-pool chains fused (:func:`~signgd_lab.conversion.passes.fold_scales`,
        :func:`~signgd_lab.conversion.passes.fuse_max_chains`), cached per device and dtype."""
        key = (self.device, self.dtype)
        if key not in self._folded:
            self._folded[key] = fuse_max_chains(fold_scales(self.graph_module))
        return self._folded[key]

    # ------------------------------------------------------------------ saving
    def __getstate__(self) -> dict:
        """Pickled state: the converted graph, dynamics and neurons; the per-shape caches
        (corrections, simulation graphs) and the id-keyed name table are rebuilt on load."""
        state = dict(self.__dict__)
        state.update(_corrections={}, _folded={}, neuron_names={})
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.neuron_names = {id(m): n for n, m in self.neurons.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the network to ``path`` (``torch.save`` of the whole network, written to a
        temporary file and renamed, so an interrupted save leaves no partial file). Load it
        with :meth:`load`; the outputs are identical."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            torch.save(self, tmp)
        except (pickle.PicklingError, AttributeError, TypeError) as err:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise ConversionError(
                f"this network cannot be saved: {err}. A target registered with a lambda or a "
                "nested function cannot be pickled; register a module-level function instead "
                "(signgd_lab.register_target(name, fn))") from err
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device | None = None
             ) -> "SpikingNetwork":
        """A network written by :meth:`save` or ``torch.save(snn)``.

        This unpickles the file (``torch.load(weights_only=False)``), which can run code stored
        in it: load only files you wrote or trust.
        """
        net = torch.load(os.fspath(path), map_location=map_location, weights_only=False)
        if not isinstance(net, cls):
            raise ConversionError(f"{path} holds a {type(net).__name__}, not a SpikingNetwork")
        return net

    # ------------------------------------------------------------------ running
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ConversionError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ConversionError(f"input has dtype {x.dtype}; pass a float tensor "
                                  f"(x.to({self.dtype}))")
        if x.device != self.device:
            raise ConversionError(f"input is on {x.device} but the network is on {self.device}; "
                                  f"move one of them (x.to('{self.device}') or snn.to(...))")
        if self._example_shape is not None and tuple(x.shape[1:]) != tuple(self._example_shape):
            raise ConversionError(f"input has per-sample shape {tuple(x.shape[1:])} but the "
                                  f"network was converted for {tuple(self._example_shape)}")
        if not torch.isfinite(x).all():
            raise ConversionError("input contains NaN or Inf; pass finite values")

    def block_steps(self, sample_shape: Sequence[int], batch: int, total: int,
                    mode: str = "multistep") -> int:
        """Steps per block: 1 in stepwise mode, else as many as fit the element budget."""
        if mode not in MODES:
            raise ConversionError(f"unknown mode {mode!r}; use one of {MODES}")
        if mode == "stepwise":
            return 1
        per_step = batch * self.correction(torch.Size(sample_shape)).total
        return max(1, min(total, _BLOCK_ELEMENTS // per_step))

    def estimate_memory(self, sample_shape: Sequence[int], batch: int, block_steps: int) -> int:
        """Bytes a run needs beyond the model: neuron state for ``batch`` samples plus about
        six block-sized buffers per population (currents, estimates, targets, spikes)."""
        corr = self.correction(torch.Size(sample_shape))
        item = torch.empty((), dtype=self.dtype).element_size()
        return int(item * batch * (corr.state + 6 * block_steps * corr.largest))

    def _check_memory(self, needed: int) -> None:
        available = _available_memory(self.device)
        if available is not None and needed > available:
            raise ConversionError(
                f"this run needs about {needed / 2**30:.2f} GiB for neuron state and buffers but "
                f"only {available / 2**30:.2f} GiB are available on {self.device}; pass "
                "batch_chunk=... (same outputs, less memory), a smaller block_steps (or "
                "mode='stepwise'), or allow_large=True")

    def forward(self, x: torch.Tensor, timestamps: int | Sequence[int] = (8, 64),
                mode: str = "multistep", block_steps: int | None = None,
                probes: Sequence[Probe] = (), allow_large: bool = False,
                batch_chunk: int | None = None) -> torch.Tensor:
        """Simulate max(timestamps) steps on ``x`` (B, ...) and return the decoded outputs at
        each timestamp, shape (len(timestamps), B, ...). State is reset on every call.

        ``block_steps`` steps are simulated per block (default: as many as fit a cache-sized
        budget in multistep mode, 1 in stepwise mode); ``batch_chunk`` runs the batch in chunks
        of that many samples (samples are independent: same outputs, less memory). Before
        running, the memory the neuron state needs is estimated; a run that would not fit in
        the device's available memory is refused unless ``allow_large=True``.
        """
        ts = check_timestamps(timestamps)
        self._check_input(x)
        if batch_chunk is not None:
            if isinstance(batch_chunk, bool) or not isinstance(batch_chunk, int) or batch_chunk < 1:
                raise ConversionError(f"batch_chunk must be a positive integer, got {batch_chunk!r}")
            if probes:
                raise ConversionError("probes record one batch; run them without batch_chunk")
            if x.shape[0] > batch_chunk:
                return torch.cat([self.forward(x[i:i + batch_chunk], ts, mode, block_steps,
                                               allow_large=allow_large)
                                  for i in range(0, x.shape[0], batch_chunk)], dim=1)
        x = x.to(self.dtype)
        total, batch = ts[-1], x.shape[0]
        corr = self.correction(x.shape[1:])
        steps = block_steps if block_steps is not None else \
            self.block_steps(x.shape[1:], batch, total, mode)
        if isinstance(steps, bool) or not (isinstance(steps, int) and steps >= 1):
            raise ConversionError(f"block_steps must be a positive integer, got {steps!r}")
        if not allow_large:
            self._check_memory(self.estimate_memory(x.shape[1:], batch, steps))
        etas = self.dynamics.etas(total, self.device, self.dtype)
        if isinstance(self.dynamics, IFDynamics):
            encoder, decoder = DirectEncoder(x), RateDecoder(corr.out_bias.expand(batch, *corr.out_bias.shape[1:]))
        else:
            encoder = FloatEncoder(x) if self.dynamics.encoder == "float" else DirectSignGDEncoder(x)
            decoder = SignGDDecoder(corr.out_bias.expand(batch, *corr.out_bias.shape[1:]),
                                    corr.out_offset)
        runtime = _Runtime(self, corr)
        for probe in probes:
            probe.start(self, batch, total)
            for name, module in self.neurons.items():
                obs = probe.observer(name, module)
                if obs is not None:
                    runtime.observers[name] = _chain(runtime.observers.get(name), obs)
        # without observers the scaling multiplications are folded into the neuron kernels
        graph = self.graph_module if runtime.observers else self._simulation_graph()
        wanted = {t: i for i, t in enumerate(ts)}
        results: list[torch.Tensor | None] = [None] * len(ts)
        self._attach(runtime)
        try:
            with torch.no_grad():
                for start in range(0, total, steps):
                    block = etas[start:start + steps]
                    runtime.etas = block
                    emitted = encoder.emit(block)  # (c, B, ...)
                    out = graph(emitted.reshape(-1, *x.shape[1:]))  # (c*B, ...)
                    decoded = decoder.decode(out.reshape(block.shape[0], batch, *out.shape[1:]),
                                             block)
                    for k in range(block.shape[0]):
                        if start + k + 1 in wanted:
                            results[wanted[start + k + 1]] = decoded[k]
                    for probe in probes:
                        probe.after_block(start + block.shape[0])
        finally:
            self._attach(None)
            for probe in probes:
                probe.finish()
        return torch.stack(results)


def _population(module: NeuronOp, currents: tuple[torch.Tensor, ...]) -> int:
    """Per-sample elements a population reads or writes per step (product neurons: their
    inputs and summed outputs; their membranes do not grow with the block)."""
    if isinstance(module, MatmulNeuronOp):
        a, b = currents
        return max(a.numel(), b.numel(), a.numel() // a.shape[-1] * b.shape[-1])
    return torch.broadcast_shapes(*(c.shape for c in currents)).numel()


def _membrane_shape(module: NeuronOp, inputs: tuple[torch.Tensor, ...]) -> torch.Size:
    """Shape of a population's membranes for inputs of these shapes: the broadcast shape, or
    (..., N, K, M) for the product neurons of a matmul (..., N, K) @ (..., K, M)."""
    if isinstance(module, MatmulNeuronOp):
        a, b = inputs
        return torch.Size((*a.shape, b.shape[-1]))
    return torch.broadcast_shapes(*(x.shape for x in inputs))


def _state_size(module: NeuronOp, currents: tuple[torch.Tensor, ...]) -> int:
    """Per-sample elements of a population's input estimates and membranes."""
    return sum(c.numel() for c in currents) + _membrane_shape(module, currents).numel()


def _available_memory(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes (None when it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _chain(first: Observer | None, second: Observer) -> Observer:
    if first is None:
        return second

    def both(t: int, x_hat: tuple, v: torch.Tensor, s: torch.Tensor) -> None:
        first(t, x_hat, v, s)
        second(t, x_hat, v, s)

    return both
