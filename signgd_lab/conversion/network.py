"""The spiking network: runs a converted graph with neurons in place of its nonlinearities.

One run of max(timestamps) steps yields the decoded output at every requested step ("anytime").
Steps are simulated in blocks: in a block of c steps every affine op runs once on a (c*B)-row
batch and every neuron population runs its recurrence over the c steps (docs/theory.md,
section 3: no layer feeds back, so this gives the same numbers as c = 1, the step-by-step mode).
Every requested timestamp ends a block. The timestamps, the probe protocol, the runtime behind
the neuron modules and the memory guard live in their own modules next to this one.
"""
from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Iterator, Sequence

import torch
from torch import fx, nn

from ..dynamics.config import IFDynamics, SignGDDynamics
from ..dynamics.neurons import Observer
from .errors import ConversionError
from .heap import retain_freed_memory
from .memory import check_memory
from .neuron_ops import MaxPoolChain, NeuronOp, populations
from .probe import Probe
from .runtime import Correction, Runtime
from .timestamps import block_bounds, check_timestamps

MODES = ("multistep", "stepwise")
_BLOCK_ELEMENTS = 3 * 2**20  # per-block budget: neuron inputs/outputs of all populations
_MAX_BLOCK_STEPS = 32  # and at most this many steps (on the digits models at batch 64, blocks of
# 8-32 steps are fastest: longer ones leave the caches; see benchmarks/RESULTS.md)


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
        self.neurons: dict[str, NeuronOp] = populations(graph_module)  # in execution order
        self._corrections: dict[tuple, Correction] = {}
        self._example_shape: torch.Size | None = graph_module.meta.get("input_shape")
        self._index_modules()
        self._check_dynamics()

    def _check_dynamics(self) -> None:
        """Refuse dynamics that cannot run some of the graph's neuron targets."""
        refused = sorted({m.target.name for m in self.neurons.values()
                          if not self.dynamics.can_run(m.target)})
        if refused:
            raise ConversionError(f"{type(self.dynamics).__name__} cannot run the "
                                  f"{', '.join(refused)} neurons of this graph; convert the model "
                                  "with these dynamics (convert(..., dynamics=...)), which refuses "
                                  "such ops by name")

    def _index_modules(self) -> None:
        """The runtime's lookup tables (module id -> population / chain name) and the list of
        population modules it attaches to."""
        self.neuron_names = {id(m): n for n, m in self.neurons.items()}
        chains = {n: m for n, m in self.graph_module.named_modules() if isinstance(m, MaxPoolChain)}
        self.chain_names = {id(m): n for n, m in chains.items()}
        self.population_modules = [*self.neurons.values(), *chains.values()]
        self.shared_inputs, self.shared_readers = shared_inputs(self.graph_module, self.neurons)

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
        first = next(self._tensors(), None)  # the first one: no walk over the whole tree
        return torch.device("cpu") if first is None else first.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the network's parameters."""
        first = next((t for t in self._tensors() if t.is_floating_point()), None)
        return torch.get_default_dtype() if first is None else first.dtype

    def _tensors(self) -> Iterator[torch.Tensor]:
        """The graph's parameters, then its buffers (lazily)."""
        return itertools.chain(self.graph_module.parameters(), self.graph_module.buffers())

    def ann(self, x: torch.Tensor) -> torch.Tensor:
        """The converted graph evaluated as an ANN (exact targets)."""
        with torch.no_grad():
            return self.graph_module(x)

    def correction(self, sample_shape: torch.Size) -> Correction:
        """Offsets and biases for inputs of shape (B, *sample_shape), cached per shape/device."""
        key = (tuple(sample_shape), self.device, self.dtype,
               tuple(m.scaling_version for m in self.neurons.values()))
        if key in self._corrections:
            return self._corrections[key]
        passes = {}
        for value in (1.0, 0.0):
            runtime = Runtime(self, force=value)
            runtime.attach()
            try:
                with torch.no_grad():
                    x = torch.full((1, *sample_shape), value, dtype=self.dtype, device=self.device)
                    out = self.graph_module(x)
            finally:
                runtime.detach()
            if not isinstance(out, torch.Tensor):
                raise ConversionError(
                    f"the model returns {type(out).__name__}; SpikingNetwork needs a "
                    "single output tensor (wrap the model to return one tensor)")
            passes[value] = (out, runtime.recorded)
        (out1, rec1), (out0, rec0) = passes[1.0], passes[0.0]

        def offset(one: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:  # A(1) + A(0)
            return (one - zero) + 2 * zero if self.offset_sum == "reference" else one + zero

        corr = Correction(
            offsets={n: tuple(offset(a, b) for a, b in zip(rec1[n], rec0[n])) for n in rec1},
            biases=dict(rec0), out_offset=offset(out1, out0), out_bias=out0)
        sizes = [self.neurons[n].traffic(c) for n, c in rec0.items()]
        corr.largest, corr.total = max([1] + sizes), max(1, sum(sizes))
        corr.state = sum(self.neurons[n].state_size(c) for n, c in rec0.items())
        self._corrections[key] = corr
        return corr

    # ------------------------------------------------------------------ saving
    def __getstate__(self) -> dict:
        """Pickled state: the converted graph, dynamics and neurons; the per-shape corrections
        and the module index (id-keyed name tables, population list) are rebuilt on load."""
        state = dict(self.__dict__)
        state.update(_corrections={}, neuron_names={}, chain_names={}, population_modules=[])
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if any(not hasattr(m, "scaling_version") for m in self.neurons.values()):
            raise ConversionError("this network was saved by an older signgd_lab, whose neuron "
                                  "modules did not own their rescaling; convert the model again "
                                  "and save the new network")
        self._index_modules()

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
        if x.dim() == 0 or x.shape[0] == 0:
            raise ConversionError(f"input {tuple(x.shape)} has no samples; pass a batch of at "
                                  f"least one (B, ...), e.g. x.unsqueeze(0) for one sample")
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
        """Steps per block: 1 in stepwise mode, else as many as fit the element budget (at
        most 32)."""
        if mode not in MODES:
            raise ConversionError(f"unknown mode {mode!r}; use one of {MODES}")
        if mode == "stepwise":
            return 1
        per_step = batch * self.correction(torch.Size(sample_shape)).total
        return max(1, min(total, _MAX_BLOCK_STEPS, _BLOCK_ELEMENTS // per_step))

    def estimate_memory(self, sample_shape: Sequence[int], batch: int, block_steps: int) -> int:
        """Bytes a run needs beyond the model: neuron state for ``batch`` samples plus about
        six block-sized buffers per population (currents, estimates, targets, spikes)."""
        corr = self.correction(torch.Size(sample_shape))
        item = torch.empty((), dtype=self.dtype).element_size()
        return int(item * batch * (corr.state + 6 * block_steps * corr.largest))

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
        self._check_dynamics()
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
            check_memory(self.estimate_memory(x.shape[1:], batch, steps), self.device)
        if self.device.type == "cpu":
            retain_freed_memory()  # blocks reuse freed buffers instead of faulting pages in
        etas = self.dynamics.etas(total, self.device, self.dtype)
        encoder, decoder = self.dynamics.codec(
            x, corr.out_bias.expand(batch, *corr.out_bias.shape[1:]), corr.out_offset)
        observers: dict[str, list[Observer]] = {}
        for probe in probes:
            probe.start(self, batch, total)
            for name, module in self.neurons.items():
                obs = probe.observer(name, module)
                if obs is not None:
                    observers.setdefault(name, []).append(obs)
        runtime = Runtime(self, corr, observers={n: _all_of(o) for n, o in observers.items()},
                          count_spikes=any(probe.counts_spikes for probe in probes))
        stops = set(ts).union(*(probe.stops() for probe in probes))
        wanted = {t: i for i, t in enumerate(ts)}
        results: list[torch.Tensor | None] = [None] * len(ts)
        runtime.attach()
        try:
            with torch.no_grad():
                for start, end in block_bounds(total, stops, steps):
                    block = etas[start:end]
                    runtime.etas = block
                    emitted = encoder.emit(block)  # (c, B, ...)
                    out = self.graph_module(emitted.reshape(-1, *x.shape[1:]))  # (c*B, ...)
                    decoded = decoder.decode(out.reshape(block.shape[0], batch, *out.shape[1:]),
                                             block)
                    for k in range(block.shape[0]):
                        if start + k + 1 in wanted:
                            results[wanted[start + k + 1]] = decoded[k]
                    for probe in probes:
                        probe.after_block(end, runtime)
        finally:
            runtime.detach()
            for probe in probes:
                probe.finish()
        return torch.stack(results)


def shared_inputs(gm: fx.GraphModule, neurons: dict[str, NeuronOp]
                  ) -> tuple[dict[str, tuple[str | None, ...]], dict[str, int]]:
    """The graph values that more than one neuron module reads (LayerNorm's u = x - mean feeds
    its square and its x/sqrt(var) populations): for each population that reads one, the name
    of the node behind each of its inputs (None for an input no other population reads), and
    for each such node how many inputs read it. The runtime makes a strided one contiguous once
    per block for all its readers."""
    readers: dict[str, int] = {}
    inputs: dict[str, tuple[str | None, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in neurons:
            inputs[node.target] = tuple(a.name if isinstance(a, fx.Node) else None
                                        for a in node.args)
            for name in inputs[node.target]:
                if name is not None:
                    readers[name] = readers.get(name, 0) + 1
    shared = {n: c for n, c in readers.items() if c > 1}
    return ({p: tuple(a if a in shared else None for a in args) for p, args in inputs.items()
             if any(a in shared for a in args)}, shared)


def _all_of(observers: list[Observer]) -> Observer:
    """One observer calling each of ``observers`` in turn."""
    if len(observers) == 1:
        return observers[0]

    def each(t: int, x_hat: tuple, v: torch.Tensor, s: torch.Tensor) -> None:
        for observer in observers:
            observer(t, x_hat, v, s)

    return each
