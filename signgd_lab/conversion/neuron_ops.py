"""Neuron modules: one module per population of neurons, standing where the ANN had a nonlinearity.

A module owns everything about its population: the target g, the exact rescaling around it
(input shift / divisors, output scale, the reshaping scale of h(z) = g(s z) / s, all set by the
scaling pass), and for max-pooling the window geometry. In a plain forward pass it computes the
exact value, so the converted graph is an ANN that matches the original (every pass is tested
that way). While a :class:`~signgd_lab.conversion.network.SpikingNetwork` runs, the network's
runtime stands behind each module and the module's :meth:`NeuronOp.simulate` advances its
population; the graph that users and probes see is the graph that runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import fx, nn

from ..dynamics.neurons import Drive, NeuronState, Observer, ProductSumNeurons
from ..dynamics.targets import Target

if TYPE_CHECKING:  # pragma: no cover
    from ..dynamics.config import IFDynamics, SignGDDynamics


def broadcast_shape(*shapes: Sequence[int]) -> torch.Size:
    """The shape the given shapes broadcast to (torch.broadcast_shapes without its first-call
    import of torch's symbolic shape machinery, about a second)."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return torch.Size(out)


class NeuronRuntime(Protocol):
    """What a SpikingNetwork provides to the neuron modules while it runs."""

    def __call__(self, module: "NeuronOp", *currents: torch.Tensor) -> torch.Tensor: ...

    def max_chain(self, chain: "MaxPoolChain", y: torch.Tensor) -> torch.Tensor:
        """The output of a :class:`MaxPoolChain` on ``y``."""


class NeuronOp(nn.Module):
    """A population of neurons with target ``target`` replacing one ANN op.

    Seen from the graph it computes ``g((x_1 - shift) / d_1, x_2 / d_2) * out_scale`` where each
    of ``in_shift0``, ``in_scale0``, ``in_scale1`` and ``out_scale`` may be absent (None). The
    neurons themselves see the rescaled inputs z_i and run the target (or h(z) = g(s z) / s
    when ``shape_scale`` s is set); their spikes are multiplied by ``out_scale``.

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
        self.scaling_version = 0  # counts set_scaling calls (a network's corrections follow it)
        for name in ("in_shift0", "in_scale0", "in_scale1", "out_scale", "shape_scale"):
            self.register_buffer(name, None)

    # ------------------------------------------------------------------ scaling
    def set_scaling(self, divisors: Sequence[torch.Tensor | None] = (),
                    shift: torch.Tensor | None = None, out_scale: torch.Tensor | None = None,
                    shape_scale: torch.Tensor | None = None) -> None:
        """Set the exact rescaling around the neurons (see the class docstring): input i is
        divided by ``divisors[i]`` (after subtracting ``shift`` from input 0), the spikes are
        multiplied by ``out_scale``, and ``shape_scale`` s makes the neurons run
        h(z) = g(s z) / s (a one-input target seen on z = x / s)."""
        def own(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().clone()

        for i, d in enumerate(divisors):
            setattr(self, f"in_scale{i}", own(d))
        self.in_shift0, self.out_scale, self.shape_scale = own(shift), own(out_scale), own(shape_scale)
        self.scaling_version += 1

    def divisor(self, i: int) -> torch.Tensor | None:
        """The divisor of input ``i`` (None: not divided)."""
        return getattr(self, f"in_scale{i}", None)

    def prepare(self, *x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The inputs the neurons see: (x_1 - shift) / d_1, x_2 / d_2 (where set)."""
        out = []
        for i, xi in enumerate(x):
            if i == 0 and self.in_shift0 is not None:
                xi = torch.sub(xi, self.in_shift0)
            d = self.divisor(i)
            out.append(xi if d is None else torch.div(xi, d))
        return tuple(out)

    def scale_output(self, y: torch.Tensor) -> torch.Tensor:
        """The population's output in the graph's units: ``y * out_scale`` (where set)."""
        return y if self.out_scale is None else torch.mul(y, self.out_scale)

    def simulated_target(self) -> Target:
        """The target the neurons run: ``target``, or h(z) = g(s z) / s when ``shape_scale``
        is set."""
        s = self.shape_scale
        return self.target if s is None else self.target.rescaled(s)

    # ------------------------------------------------------------------ ANN
    def exact(self, *z: torch.Tensor) -> torch.Tensor:
        """The value the neurons approximate on their (rescaled) inputs ``z``."""
        return self.simulated_target().fn(*z)

    def membrane_targets(self, *z: torch.Tensor) -> torch.Tensor:
        """What each membrane approaches on the rescaled inputs ``z`` (the shape of the
        membranes: :meth:`membrane_shape`)."""
        return self.exact(*z)

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        if self.runtime is not None:
            return self.runtime(self, *x)
        return self.scale_output(self.exact(*self.prepare(*x)))

    # ------------------------------------------------------------------ simulation
    def membrane_shape(self, inputs: Sequence[torch.Tensor]) -> torch.Size:
        """Shape of the membranes for neuron inputs of these shapes (their broadcast)."""
        return broadcast_shape(*(x.shape for x in inputs))

    def traffic(self, inputs: Sequence[torch.Tensor]) -> int:
        """Elements the population reads or writes per step for inputs of these shapes."""
        return self.membrane_shape(inputs).numel()

    def state_size(self, inputs: Sequence[torch.Tensor]) -> int:
        """Elements of input estimates and membranes for inputs of these shapes."""
        return sum(x.numel() for x in inputs) + self.membrane_shape(inputs).numel()

    def initial_state(self, biases: Sequence[torch.Tensor], batch: int) -> NeuronState:
        """x_hat_0 = bias (per input, expanded over the batch), v_0 = 0."""
        xs = tuple(b.expand(batch, *b.shape[1:]).clone() for b in biases)
        return NeuronState(xs, torch.zeros(self.membrane_shape(xs), dtype=xs[0].dtype,
                                           device=xs[0].device))

    def forced(self, value: float, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The population's output (graph units) when every neuron emits ``value``: the
        correction passes (docs/theory.md, section 3). ``inputs`` are the prepared inputs."""
        shape = self.membrane_shape(inputs)
        return self.scale_output(torch.full(shape, value, dtype=inputs[0].dtype,
                                            device=inputs[0].device))

    def decode(self, state: NeuronState) -> torch.Tensor:
        """The population's output estimate in the graph's units (v_t * out_scale)."""
        return self.scale_output(state.v)

    def simulate(self, dynamics: "SignGDDynamics | IFDynamics", state: NeuronState,
                 currents: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor],
                 etas: torch.Tensor, observer: Observer | None = None) -> torch.Tensor:
        """Advance ``len(etas)`` steps on ``currents`` (T, B, ...) (graph units, before the
        input rescaling); returns the output (T, B, ...) in graph units. The first input's
        shift and divisor and the output scale go into the neuron kernel where one runs."""
        drives = [Drive(currents[0], offsets[0], self.in_scale0, self.in_shift0)]
        if len(currents) > 1:  # the kernels rescale the first input only
            current = currents[1] if self.in_scale1 is None else torch.div(currents[1],
                                                                            self.in_scale1)
            drives.append(Drive(current, offsets[1]))
        return dynamics.run(self.simulated_target(), state, tuple(drives), etas, observer,
                            self.out_scale)

    def inner_accumulates(self, spikes: float) -> float:
        """Synaptic operations that ``spikes`` of this population cost inside it (none: its
        spikes go to the next layer, which counts them)."""
        return 0.0

    def ann_macs(self, inputs: Sequence[torch.Tensor]) -> float:
        """Multiply-accumulates of the ANN op on these inputs (an elementwise op: none)."""
        return 0.0

    def extra_repr(self) -> str:
        return f"target={self.target.name}, role={self.role}, source={self.source}"


class MatmulNeuronOp(NeuronOp):
    """x1 @ x2 for two input-dependent tensors: N*K*M product neurons (target ``mul``) whose
    spikes are summed over K. Shapes: x1 (..., N, K), x2 (..., K, M) -> (..., N, M)."""

    def exact(self, *z: torch.Tensor) -> torch.Tensor:
        return torch.matmul(z[0], z[1])

    def membrane_shape(self, inputs: Sequence[torch.Tensor]) -> torch.Size:
        """(..., N, K, M): one product neuron per (n, k, m), the leading dims broadcast."""
        a, b = inputs
        return torch.Size((*broadcast_shape(a.shape[:-2], b.shape[:-2]), *a.shape[-2:],
                           b.shape[-1]))

    def traffic(self, inputs: Sequence[torch.Tensor]) -> int:
        """Inputs and summed outputs (the membranes do not grow with the block)."""
        a, b = inputs
        shape = self.membrane_shape(inputs)
        return max(a.numel(), b.numel(), shape.numel() // shape[-2])

    def forced(self, value: float, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        a, b = inputs
        return self.scale_output(torch.matmul(torch.full_like(a, value), torch.ones_like(b)))

    def membrane_targets(self, *z: torch.Tensor) -> torch.Tensor:
        """a[..., n, k] * b[..., k, m] for every product neuron, (..., N, K, M)."""
        return z[0].unsqueeze(-1) * z[1].unsqueeze(-3)

    def decode(self, state: NeuronState) -> torch.Tensor:
        """sum_k v[..., n, k, m] * out_scale: the estimate of the matmul."""
        return self.scale_output(state.v.sum(-2))

    def simulate(self, dynamics: "SignGDDynamics | IFDynamics", state: NeuronState,
                 currents: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor],
                 etas: torch.Tensor, observer: Observer | None = None) -> torch.Tensor:
        drives = tuple(Drive(z, o) for z, o in zip(self.prepare(*currents), offsets))
        counts = ProductSumNeurons(self.target).run(state, drives, etas, observer)
        return self.scale_output(counts)

    def inner_accumulates(self, spikes: float) -> float:
        """Each product spike is one accumulate into the sum over K."""
        return spikes

    def ann_macs(self, inputs: Sequence[torch.Tensor]) -> float:
        """N*K*M per matrix product."""
        return float(self.membrane_shape(inputs).numel())


class MaxPoolChain(nn.Module):
    """One axis of a max-pool: ``kernel`` windows w_i = y[.., i : i + stride (size - 1) + 1 :
    stride, ..] along ``dim`` and a chain of k - 1 pairwise max populations,
    m_1 = max(w_0, w_1), m_i = max(m_{i-1}, w_i) (each a :class:`NeuronOp`, rescaled on its own
    by the scaling pass). The chain owns the window geometry, so the runtime can run the whole
    chain in one kernel that gathers the windows from ``y`` itself; without a runtime (or where
    the kernel does not apply) it calls the neurons one by one, with the same numbers."""

    def __init__(self, neurons: Sequence[NeuronOp], dim: int, kernel: int, stride: int,
                 size: int) -> None:
        super().__init__()
        self.chain = nn.ModuleList(neurons)
        self.dim, self.kernel, self.stride, self.size = dim, kernel, stride, size
        self.runtime: NeuronRuntime | None = None

    def window_index(self, i: int) -> tuple:
        """The index of window ``i`` of y (a strided slice along ``dim``)."""
        along = slice(i, i + self.stride * (self.size - 1) + 1, self.stride)
        return (Ellipsis, along) + (slice(None),) * (-1 - self.dim)

    def unfused(self, y: torch.Tensor) -> torch.Tensor:
        """The chain neuron by neuron."""
        windows = [y[self.window_index(i)] for i in range(self.kernel)]
        out = self.chain[0](windows[0], windows[1])
        for neuron, window in zip(self.chain[1:], windows[2:]):
            out = neuron(out, window)
        return out

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.unfused(y) if self.runtime is None else self.runtime.max_chain(self, y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel={self.kernel}, stride={self.stride}, size={self.size}"


#: the modules a converted graph may call that hold neuron populations
POPULATION_MODULES = (NeuronOp, MaxPoolChain)


def populations(gm: fx.GraphModule) -> dict[str, NeuronOp]:
    """Every neuron population of a converted graph, by module path, in execution order (the
    neurons of a :class:`MaxPoolChain` as ``<chain>.chain.<i>``)."""
    out: dict[str, NeuronOp] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, NeuronOp):
            out[node.target] = module
        elif isinstance(module, MaxPoolChain):
            for i, neuron in enumerate(module.chain):
                out[f"{node.target}.chain.{i}"] = neuron
    return out
