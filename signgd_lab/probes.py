"""Probes: what each neuron population and layer of a converted network does.

* :func:`layer_errors` -- per-layer error table (layer x time-step: relative L2, max abs, cosine)
  between the SNN's decoded activation and the ANN's activation at the same node.
* :class:`TraceProbe` -- membrane / input-estimate / spike traces of a few chosen neurons
  (memory: steps x chosen neurons, never a whole layer).
* :func:`spike_stats` -- spikes per layer (firing rates), synaptic operations and an energy
  estimate against the ANN's multiply-accumulates.
* :func:`debug_run` -- all of the above from one simulation (what the debugger notebook shows).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .conversion.errors import ConversionError
from .conversion.graph_utils import dynamic_nodes, op_name
from .conversion.network import SpikingNetwork
from .conversion.neuron_ops import POPULATION_MODULES, NeuronOp
from .conversion.probe import Probe, RunState
from .conversion.timestamps import check_timestamps
from .dynamics import kernels

#: Energy per operation, 45 nm CMOS, 32-bit float (M. Horowitz, "Computing's energy problem",
#: ISSCC 2014): a multiply-accumulate costs 3.7 pJ (mult) + 0.9 pJ (add); an accumulate 0.9 pJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def _resolve_layers(snn: SpikingNetwork, layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return list(snn.neurons)
    unknown = [n for n in layers if n not in snn.neurons]
    if unknown:
        raise ConversionError(f"unknown layer(s) {unknown}; choose from snn.neurons: "
                              f"{', '.join(snn.neurons)}")
    return list(layers)


class ActivationProbe(Probe):
    """Records the decoded output estimate (graph units, the ANN node's shape) of chosen
    populations at chosen time-steps, read from the state at the end of the block that ends
    there: the populations keep running their fused kernels."""

    def __init__(self, layers: Sequence[str], timestamps: Sequence[int]) -> None:
        self.layers = list(layers)
        self.timestamps = set(timestamps)
        self.values: dict[tuple[str, int], torch.Tensor] = {}

    def stops(self) -> Sequence[int]:
        return sorted(self.timestamps)

    def after_block(self, steps_done: int, run: RunState) -> None:
        if steps_done in self.timestamps:
            for name in self.layers:
                self.values[(name, steps_done)] = run.decoded(name).clone()


def ann_activations(snn: SpikingNetwork, x: torch.Tensor, layers: Sequence[str] | None = None
                    ) -> dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    """``{layer: (inputs, output)}`` of neuron populations in the converted ANN for input ``x``
    (the module's inputs and its output, in graph units)."""
    wanted = set(_resolve_layers(snn, layers))
    seen: dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
    hooks = []
    for name, module in snn.neurons.items():
        if name in wanted:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, (tuple(a.detach() for a in i),
                                                                   o.detach()))))
    try:
        snn.ann(x.to(snn.dtype))
    finally:
        for h in hooks:
            h.remove()
    return seen


def membrane_targets(snn: SpikingNetwork, x: torch.Tensor, layer: str) -> torch.Tensor:
    """What the membranes of population ``layer`` approach on input ``x``, shaped like them:
    the target of the rescaled inputs the neurons see, g(z), in the neurons' own units (the
    units of a :class:`TraceProbe`'s ``v``; the layer's output in the graph is g(z) * out_scale),
    and for matmul product neurons each product a[n, k] b[k, m], (B, N, K, M)."""
    module = snn.neurons[_resolve_layers(snn, [layer])[0]]
    inputs, _ = ann_activations(snn, x, [layer])[layer]
    with torch.no_grad():
        return module.membrane_targets(*module.prepare(*inputs))


@dataclass
class LayerErrorTable:
    """Per-layer errors of the SNN against the ANN, rows = layers (graph order) + ``output``,
    columns = timestamps. Tensors have shape (len(layers), len(timestamps))."""

    layers: list[str]
    timestamps: list[int]
    targets: list[str]
    roles: list[str]
    rel_l2: torch.Tensor
    max_abs: torch.Tensor
    cosine: torch.Tensor

    def to_rows(self) -> list[dict]:
        """One dict per (layer, timestamp)."""
        return [dict(layer=l, target=self.targets[i], role=self.roles[i], T=t,
                     rel_l2=self.rel_l2[i, j].item(), max_abs=self.max_abs[i, j].item(),
                     cosine=self.cosine[i, j].item())
                for i, l in enumerate(self.layers) for j, t in enumerate(self.timestamps)]

    def worst_layer(self, T: int | None = None) -> str:
        """The neuron layer with the largest relative error at ``T`` (default: the last T)."""
        j = self.timestamps.index(T) if T is not None else -1
        neuron_rows = self.rel_l2[:-1, j]
        return self.layers[int(neuron_rows.argmax())]


def _errors(est: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Relative L2 error, max abs error and cosine similarity of each estimate in ``est``
    (n, *ref.shape) against ``ref``, in float64, as three (n,) tensors: one pass per layer, no
    synchronising ``.item()`` per entry."""
    est_f = est.reshape(est.shape[0], -1).double()  # (n, numel)
    ref_f = ref.reshape(1, -1).double()  # (1, numel)
    diff = est_f - ref_f
    rel = diff.norm(dim=1) / ref_f.norm().clamp_min(1e-12)
    cos = torch.nn.functional.cosine_similarity(est_f, ref_f.expand_as(est_f), dim=1, eps=1e-12)
    return rel, diff.abs().amax(dim=1), cos


def layer_errors(model: nn.Module, snn: SpikingNetwork, x: torch.Tensor,
                 timestamps: Sequence[int], layers: Sequence[str] | None = None,
                 mode: str = "multistep") -> LayerErrorTable:
    """Error of every (chosen) neuron layer and of the output at each timestamp, in one run.

    A layer's SNN value is its decoded output estimate v_t times its output scale (summed over K
    for matmul product neurons); its reference is the same module's output in the converted ANN
    (which equals ``model`` up to the recipe's target approximations). Probing costs no
    simulation speed: the values are read between blocks. The last row, ``output``, compares the decoded
    network output with ``model(x)``.
    """
    ts = check_timestamps(timestamps)
    names = _resolve_layers(snn, layers)
    probe = ActivationProbe(names, ts)
    out = snn(x, ts, mode=mode, probes=[probe])
    return _error_table(model, snn, x, names, ts, out, probe.values)


def _error_table(model: nn.Module, snn: SpikingNetwork, x: torch.Tensor, names: list[str],
                 ts: list[int], out: torch.Tensor,
                 values: dict[tuple[str, int], torch.Tensor]) -> LayerErrorTable:
    """The :class:`LayerErrorTable` of a run's outputs ``out`` and decoded layer ``values``."""
    ann = ann_activations(snn, x, names)
    with torch.no_grad():
        ref_out = model(x.to(snn.dtype))
    rows = names + ["output"]
    shape = (len(rows), len(ts))
    rel, mx, cos = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    for i, name in enumerate(rows):
        est, ref = (out, ref_out) if name == "output" else \
            (torch.stack([values[(name, t)] for t in ts]), ann[name][1])  # (len(ts), *ref.shape)
        rel[i], mx[i], cos[i] = _errors(est, ref)
    targets = [snn.neurons[n].target.name for n in names] + ["-"]
    roles = [snn.neurons[n].role for n in names] + ["output"]
    return LayerErrorTable(rows, ts, targets, roles, rel, mx, cos)


@dataclass
class DebugRun:
    """Everything the conversion debugger shows, from ONE simulation of max(timestamps) steps.

    Attributes:
        table: the :func:`layer_errors` table.
        outputs: decoded network outputs, (len(timestamps), B, ...).
        values: (layer, T) -> the layer's decoded output estimate at T (the ANN node's shape).
        stats: :func:`spike_stats` of the run (at T = max(timestamps)).
        traces: layer -> a :class:`TraceProbe` of sample 0 (the neurons asked for per layer).
    """

    table: LayerErrorTable
    outputs: torch.Tensor
    values: dict[tuple[str, int], torch.Tensor]
    stats: "SpikeStats"
    traces: dict[str, "TraceProbe"]


def debug_run(model: nn.Module, snn: SpikingNetwork, x: torch.Tensor,
              timestamps: Sequence[int], trace_neurons: dict[str, Sequence[int] | int]
              ) -> DebugRun:
    """Error table, layer values, spike statistics and membrane traces of ``snn`` on ``x`` from
    one run (each of :func:`layer_errors`, :func:`spike_stats` and a :class:`TraceProbe` would
    otherwise simulate the network again). ``trace_neurons``: layer -> neurons to trace (flat
    indices into one sample's population, or a count)."""
    ts = check_timestamps(timestamps)
    names = list(snn.neurons)
    activations, counter = ActivationProbe(names, ts), SpikeCounter()
    traces = {layer: TraceProbe(layer, neurons) for layer, neurons in trace_neurons.items()}
    out = snn(x, ts, probes=[activations, counter, *traces.values()])
    table = _error_table(model, snn, x, names, ts, out, activations.values)
    stats = _stats(counter.spikes, counter.population, counter.sops, counter.dense_macs,
                   counter.ann_macs, x.shape[0], ts[-1], _warn_uncounted(snn))
    return DebugRun(table, out, activations.values, stats, traces)


class TraceProbe(Probe):
    """Per-step traces of a few neurons of one layer: input estimate(s), membrane v, spikes.

    Args:
        layer: a name from ``snn.neurons``.
        neurons: flat indices into one sample's population (or a count: the first n, spread
            evenly over the population).
        sample: which batch element to watch.

    After a run: ``x_hat`` (T, n) (and ``x_hat_inputs`` for two-input neurons), ``v`` (T, n),
    ``spikes`` (T, n), plus ``indices``.
    """

    def __init__(self, layer: str, neurons: Sequence[int] | int = 5, sample: int = 0) -> None:
        self.layer = layer
        self.request = neurons
        self.sample = sample
        self.indices: torch.Tensor | None = None
        self._x: list[tuple[torch.Tensor, ...]] = []
        self._v: list[torch.Tensor] = []
        self._s: list[torch.Tensor] = []

    def start(self, network: SpikingNetwork, batch: int, steps: int) -> None:
        if self.layer not in network.neurons:
            raise ConversionError(f"unknown layer {self.layer!r}; choose from snn.neurons")
        if not 0 <= self.sample < batch:
            raise ConversionError(f"sample {self.sample} out of range for a batch of {batch}")
        self._x, self._v, self._s, self.indices = [], [], [], None

    def _pick(self, v: torch.Tensor) -> torch.Tensor:
        size = v[self.sample].numel()
        if isinstance(self.request, int):
            n = max(1, min(self.request, size))
            return torch.linspace(0, size - 1, n).round().long()
        idx = torch.as_tensor(list(self.request), dtype=torch.long)
        if idx.numel() == 0 or idx.min() < 0 or idx.max() >= size:
            raise ConversionError(f"neuron indices must lie in [0, {size}) for layer {self.layer}")
        return idx

    def observer(self, name: str, module: NeuronOp):
        if name != self.layer:
            return None

        def record(t: int, x_hat: tuple, v: torch.Tensor, s: torch.Tensor) -> None:
            if self.indices is None:
                self.indices = self._pick(v).to(v.device)
            shape = v[self.sample].shape
            take = lambda a: a[self.sample].expand(shape).flatten()[self.indices].clone()  # noqa: E731
            self._x.append(tuple(take(a) for a in x_hat))
            self._v.append(take(v))
            self._s.append(take(s))

        return record

    @property
    def v(self) -> torch.Tensor:
        """(T, n) membrane / output estimates."""
        return torch.stack(self._v)

    @property
    def spikes(self) -> torch.Tensor:
        """(T, n) spikes."""
        return torch.stack(self._s)

    @property
    def x_hat_inputs(self) -> tuple[torch.Tensor, ...]:
        """One (T, n) tensor per input estimate."""
        return tuple(torch.stack(k) for k in zip(*self._x))

    @property
    def x_hat(self) -> torch.Tensor:
        """(T, n) estimate of the first input."""
        return self.x_hat_inputs[0]


class SpikeCounter(Probe):
    """Counts spikes per neuron population and synaptic operations per affine layer, from the
    populations' spike totals between blocks (the fused kernels count as they run), and the
    multiply-accumulates of one ANN inference on the batch (``ann_macs``, what :func:`ann_macs`
    gives: the input-dependent weight layers and matmul populations of the first block over its
    steps, plus the weight layers on constants, which run once a block).

    ``checkpoints``: step counts at which to keep a copy of the running totals in
    ``snapshots[t] = (spikes, sops, dense_macs)`` (each ends a block)."""

    counts_spikes = True

    def __init__(self, checkpoints: Sequence[int] = ()) -> None:
        self.spikes: dict[str, float] = {}
        self.population: dict[str, int] = {}
        self.sops = 0.0
        self.dense_macs = 0.0
        self.ann_macs = 0.0
        self.checkpoints = set(checkpoints)
        self.snapshots: dict[int, tuple[dict[str, float], float, float]] = {}
        self._synapse_ops = 0.0
        self._neurons: dict[str, NeuronOp] = {}
        self._hooks: list = []
        self._first_block = True  # ann_macs is measured on it
        self._first_block_macs = 0.0  # of its input-dependent layers, all its steps together
        self._static: set[nn.Module] = set()  # weight layers on constants only
        self._first_block_hooks: list = []

    def start(self, network: SpikingNetwork, batch: int, steps: int) -> None:
        self.spikes, self.population, self.sops, self.dense_macs = {}, {}, 0.0, 0.0
        self.snapshots, self._synapse_ops, self.ann_macs = {}, 0.0, 0.0
        self._first_block, self._first_block_macs = True, 0.0
        self._neurons = network.neurons
        self._dense = _encoder_fed_layers(network)
        gm = network.graph_module
        dynamic = dynamic_nodes(gm.graph)
        calls = [n for n in gm.graph.nodes if n.op == "call_module"]
        self._static = {gm.get_submodule(n.target) for n in calls} - \
            {gm.get_submodule(n.target) for n in calls if n in dynamic}
        for module in gm.modules():
            if isinstance(module, _AFFINE_LAYERS):
                self._hooks.append(module.register_forward_hook(self._count_synapses))
        self._first_block_hooks = [m.register_forward_hook(self._count_products)
                                   for m in self._neurons.values()]

    def stops(self) -> Sequence[int]:
        return sorted(self.checkpoints)

    def finish(self) -> None:
        for h in self._hooks + self._first_block_hooks:
            h.remove()
        self._hooks, self._first_block_hooks = [], []

    def after_block(self, steps_done: int, run: RunState) -> None:
        if self._first_block:  # it ran steps 1..steps_done
            self.ann_macs += self._first_block_macs / steps_done
        for h in self._first_block_hooks:
            h.remove()
        self._first_block, self._first_block_hooks = False, []
        for name in self._neurons:
            state = run.state(name)
            self.spikes[name] = float(state.fired)
            self.population[name] = state.v[0].numel()
        self.sops = self._synapse_ops + sum(m.inner_accumulates(self.spikes[n])
                                            for n, m in self._neurons.items())
        if steps_done in self.checkpoints:
            self.snapshots[steps_done] = (dict(self.spikes), self.sops, self.dense_macs)

    def _count_synapses(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        x = inputs[0]
        macs = _macs(module, output)
        if self._first_block and module in self._static:
            self.ann_macs += macs
        elif self._first_block:
            self._first_block_macs += macs
        if module in self._dense:
            self.dense_macs += macs
        else:  # every nonzero input is a spike (times a scale): one accumulate per synapse
            self._synapse_ops += kernels.count_nonzero(x) * macs / max(x.numel(), 1)

    def _count_products(self, module: NeuronOp, inputs: tuple, output: torch.Tensor) -> None:
        self._first_block_macs += module.ann_macs(inputs)


_AFFINE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _encoder_fed_layers(snn: SpikingNetwork) -> set[nn.Module]:
    """Affine layers reached from the network input without crossing a neuron: they receive
    the encoder's real values, so they multiply-accumulate instead of accumulating spikes."""
    gm = snn.graph_module
    fed: set = set()
    layers: set[nn.Module] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            fed.add(node)
            continue
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target),
                                                   POPULATION_MODULES):
            continue
        if any(a in fed for a in node.all_input_nodes):
            fed.add(node)
            if node.op == "call_module" and isinstance(gm.get_submodule(node.target), _AFFINE_LAYERS):
                layers.add(gm.get_submodule(node.target))
    return layers


def _macs(module: nn.Module, output: torch.Tensor) -> float:
    """Multiply-accumulates of a Linear / Conv producing ``output``."""
    if isinstance(module, nn.Linear):
        return float(output.numel() * module.in_features)
    k = 1
    for d in module.kernel_size:
        k *= d
    return float(output.numel() * module.in_channels // module.groups * k)


#: input-dependent ops that multiply by weights: counted when they are Linear / Conv modules
#: (conversion turns functional linear and conv calls into modules), reported otherwise
_WEIGHT_OPS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "matmul", "mm", "bmm", "einsum", "addmm", "baddbmm")
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def uncounted_weight_ops(snn: SpikingNetwork) -> list[str]:
    """Input-dependent ops of ``snn``'s graph that multiply by weights but are not Linear / Conv
    modules (a ``matmul`` with a constant matrix, a transposed convolution, ...): the synaptic
    operations and multiply-accumulates of :func:`spike_stats` and :func:`ann_macs` leave them
    out, and :attr:`SpikeStats.uncounted` names them."""
    gm = snn.graph_module
    dynamic = dynamic_nodes(gm.graph)
    out = []
    for node in gm.graph.nodes:
        if node not in dynamic:
            continue
        if node.op == "call_module":
            if isinstance(gm.get_submodule(node.target), _TRANSPOSED_CONVS):
                out.append(node.name)
        elif op_name(node) in _WEIGHT_OPS:
            out.append(node.name)
    return out


def _warn_uncounted(snn: SpikingNetwork) -> list[str]:
    """:func:`uncounted_weight_ops`, with a warning when there are any."""
    uncounted = uncounted_weight_ops(snn)
    if uncounted:
        warnings.warn(f"spike statistics: the synaptic operations and multiply-accumulates of "
                      f"{', '.join(uncounted)} are not counted (weight ops that are not Linear / "
                      "Conv modules); SpikeStats.uncounted lists them", stacklevel=3)
    return uncounted


def ann_macs(snn: SpikingNetwork, x: torch.Tensor) -> float:
    """Multiply-accumulates of one ANN inference on ``x`` (affine layers and matmuls)."""
    total = [0.0]
    hooks = []
    for module in snn.graph_module.modules():
        if isinstance(module, _AFFINE_LAYERS):
            hooks.append(module.register_forward_hook(
                lambda m, i, o: total.__setitem__(0, total[0] + _macs(m, o))))
        elif isinstance(module, NeuronOp):
            hooks.append(module.register_forward_hook(
                lambda m, i, o: total.__setitem__(0, total[0] + m.ann_macs(i))))
    try:
        snn.ann(x.to(snn.dtype))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


@dataclass
class SpikeStats:
    """Spiking activity of one inference of T steps, per sample.

    Attributes:
        firing_rate: layer -> spikes per neuron per step.
        spikes: layer -> spikes per sample over the run.
        sops: synaptic operations (accumulates) per sample over the run.
        dense_macs: multiply-accumulates on non-spike inputs (the encoded input layer).
        ann_macs: multiply-accumulates of one ANN inference per sample.
        uncounted: weight ops whose operations the counts leave out
            (:func:`uncounted_weight_ops`; empty for Linear / Conv layers only).
        snn_energy_uj, ann_energy_uj: estimates in microjoules with :data:`E_AC_PJ` and
            :data:`E_MAC_PJ`.
    """

    T: int
    firing_rate: dict[str, float] = field(default_factory=dict)
    spikes: dict[str, float] = field(default_factory=dict)
    sops: float = 0.0
    dense_macs: float = 0.0
    ann_macs: float = 0.0
    uncounted: list[str] = field(default_factory=list)

    @property
    def snn_energy_uj(self) -> float:
        """Estimated SNN energy per inference (uJ)."""
        return (self.sops * E_AC_PJ + self.dense_macs * E_MAC_PJ) * 1e-6

    @property
    def ann_energy_uj(self) -> float:
        """Estimated ANN energy per inference (uJ)."""
        return self.ann_macs * E_MAC_PJ * 1e-6


def spike_stats(snn: SpikingNetwork, x: torch.Tensor, T: int) -> SpikeStats:
    """Run ``snn`` for ``T`` steps on ``x`` and return per-sample spiking activity and energy."""
    (T,) = check_timestamps([T])
    return spike_stats_over_T(snn, x, [T])[0]


def spike_stats_over_T(snn: SpikingNetwork, x: torch.Tensor, Ts: Sequence[int]
                       ) -> list[SpikeStats]:
    """:func:`spike_stats` at every T in ``Ts`` from one run of max(Ts) steps (every T ends a
    block, where the running totals are read)."""
    ts = check_timestamps(list(Ts))
    counter = SpikeCounter(checkpoints=ts)
    snn(x, [ts[-1]], probes=[counter])
    macs, out = counter.ann_macs, []
    uncounted = _warn_uncounted(snn)
    for T in ts:
        spikes, sops, dense = counter.snapshots[T]
        out.append(_stats(spikes, counter.population, sops, dense, macs, x.shape[0], T,
                          uncounted))
    return out


def _stats(spikes: dict[str, float], population: dict[str, int], sops: float, dense: float,
           macs: float, batch: int, T: int, uncounted: list[str]) -> SpikeStats:
    """Per-sample :class:`SpikeStats` from a :class:`SpikeCounter`'s totals after T steps."""
    stats = SpikeStats(T=T, sops=sops / batch, dense_macs=dense / batch, ann_macs=macs / batch,
                       uncounted=list(uncounted))
    for name, count in spikes.items():
        stats.spikes[name] = count / batch
        stats.firing_rate[name] = count / (batch * population[name] * T)
    return stats
