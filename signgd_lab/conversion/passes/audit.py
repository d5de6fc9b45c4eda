"""The end-of-conversion audit: a converted network holds only neurons and ops proven affine.

Run at the end of every ``convert``, whatever the recipe or dynamics, after user handlers too:

1. every input-dependent node is a neuron (with a target the dynamics can run) or meets the
   conditions of the positive list in :mod:`signgd_lab.conversion.affine`;
2. an op the user declared affine (``register_affine``) is checked on calibration inputs:
   f(a x + (1 - a) y) must equal a f(x) + (1 - a) f(y);
3. the samples of a batch stay apart: each sample's output is the same alone as in a batch
   (the simulation stacks time steps on the batch dim).

Anything else is a :class:`ConversionError` naming the op, the node and the module path.
"""
from __future__ import annotations

import torch
from torch import fx

from ..affine import affine_violation
from ..errors import ConversionError
from ..graph_utils import batch_dims, describe, dynamic_nodes, module_of, samples_alone_on_dim0
from ..handlers import AffineOp, user_affine_op
from ..neuron_ops import MatmulNeuronOp, MaxPoolChain, NeuronOp
from .calibration import base_name

_NEURON_TYPES = (NeuronOp, MatmulNeuronOp)


def _neurons_of(module: object) -> list[NeuronOp] | None:
    """The neuron modules a graph module holds: itself (a neuron), a max-pool chain's neurons
    (its windows are fixed strided slices), or None for any other module."""
    if type(module) in _NEURON_TYPES:
        return [module]
    if type(module) is MaxPoolChain and all(type(m) is NeuronOp for m in module.chain):
        return list(module.chain)
    return None
_TOLERANCE = 1e-4


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        self.values[n] = out
        return out


def _record(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, object]:
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(x)
    return rec.values


def _rel(a: torch.Tensor, b: torch.Tensor, scale: float = 0.0) -> float:
    """max |a - b| relative to the largest magnitude of a, b and ``scale``."""
    scale = max(a.abs().max().item(), b.abs().max().item(), scale, 1e-6)
    return (a - b).abs().max().item() / scale


def _input_scale(node: fx.Node, values: dict[fx.Node, object]) -> float:
    """The largest magnitude among a node's tensor inputs (rounding in a reduction is relative
    to its inputs, not to a result that cancels to about zero)."""
    return max([v.abs().max().item() for n in node.all_input_nodes
                if isinstance(v := values.get(n), torch.Tensor) and v.numel()
                and v.is_floating_point()] + [0.0])


def _run_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, object]) -> object:
    interp = fx.Interpreter(gm)
    interp.env = dict(env)
    with torch.no_grad():
        return interp.run_node(node)


def _check_user_op(gm: fx.GraphModule, node: fx.Node, op: AffineOp, dynamic: set[fx.Node],
                   values: dict[fx.Node, object]) -> str | None:
    """f(a x + (1 - a) y) == a f(x) + (1 - a) f(y) for a = 0.3 and 2, y a shuffled and
    perturbed copy of the recorded x."""
    gen = torch.Generator().manual_seed(0)
    inputs = [n for n in node.all_input_nodes if n in dynamic]
    env = {n: values[n] for n in node.all_input_nodes}
    if not all(isinstance(env[n], torch.Tensor) and env[n].is_floating_point() for n in inputs):
        return None
    other = dict(env)
    for n in inputs:
        x = env[n]
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        other[n] = x.roll(1, 0) + 0.5 * noise * x.std().clamp_min(1e-3)
    fx_, fy = _run_node(gm, node, env), _run_node(gm, node, other)
    for a in (0.3, 2.0):
        mixed = dict(env)
        for n in inputs:
            mixed[n] = a * env[n] + (1 - a) * other[n]
        got, want = _run_node(gm, node, mixed), a * fx_ + (1 - a) * fy
        err = _rel(got, want)
        if err > _TOLERANCE:
            return (f"{describe(gm, node)}: declared affine (register_affine '{op.name}') but it "
                    f"is not: f({a:g} x + {1 - a:g} y) differs from {a:g} f(x) + {1 - a:g} f(y) by "
                    f"{err:.2g} (relative) on calibration inputs; give it a neuron handler instead")
    return None


def _sample_env(node: fx.Node, together: dict[fx.Node, object], one: dict[fx.Node, object],
                i: int, size: int, batch: dict[fx.Node, tuple[int, ...]]
                ) -> dict[fx.Node, object] | None:
    """The batched run's tensor inputs of ``node`` cut to sample ``i`` along each input's batch
    dim (those without a batch dim as they are; sizes and other non-tensors from the
    one-sample run ``one``); None when an input's batch dim is not one dim of the batch or
    tensors come in a container."""
    env = dict(one)
    for n in node.all_input_nodes:
        value, dims = together.get(n), batch.get(n)
        if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            return None  # tensors in a container (split, chunk): the positive list checks those
        if not isinstance(value, torch.Tensor):
            continue
        if dims == ():
            env[n] = value
            continue
        if dims is None or len(dims) != 1 or value.shape[dims[0]] != size:
            return None
        env[n] = value.narrow(dims[0], i, 1)
    return env


def _batch_mixing(gm: fx.GraphModule, samples: torch.Tensor,
                  batch: dict[fx.Node, tuple[int, ...]]) -> str | None:
    """The first op whose output for a sample depends on the other samples (None: none). Each
    op is run on its inputs from the batched run cut to one sample and compared with its
    batched output: op by op, so rounding that accumulates through a deep network (batched and
    single convolutions round differently) is not mistaken for mixing."""
    size = samples.shape[0]
    try:
        together, one = _record(gm, samples), _record(gm, samples[:1])
    except Exception as exc:  # a graph that fixes its batch size fails here
        return (f"the converted graph fails on a batch of {size} samples or on one "
                f"({type(exc).__name__}: {exc}); the simulation runs time steps x samples at once, "
                "so the model must not fix its batch size")
    for node in gm.graph.nodes:
        value = together.get(node)
        if node.op in ("placeholder", "output", "get_attr") or not isinstance(value, torch.Tensor) \
                or batch.get(node) != (0,) or value.shape[0] != size:
            continue
        for i in range(size):
            env = _sample_env(node, together, one, i, size, batch)
            if env is None:
                break
            single = _run_node(gm, node, env)
            if isinstance(single, torch.Tensor) and single.shape == value[i:i + 1].shape and \
                    _rel(value[i:i + 1], single, _input_scale(node, together)) > _TOLERANCE:
                return (f"{describe(gm, node)}: mixes the samples of a batch (sample {i}'s values "
                        "differ alone and in a batch); the simulation stacks time steps on the "
                        "batch dim, so no op may reduce or index over it")
    return None


def audit(gm: fx.GraphModule, samples: torch.Tensor,
          neuron_targets: set[str] | None = None) -> None:
    """Raise :class:`ConversionError` unless ``gm`` holds only neurons (with targets in
    ``neuron_targets``, when given) and proven-affine ops, with user-declared affine ops
    affine on ``samples`` (at least 2 distinct inputs) and the samples kept apart."""
    dynamic = dynamic_nodes(gm.graph)
    try:
        batch = batch_dims(gm, samples)
    except Exception as exc:  # shapes that only work for one batch size, or batch not on dim 0
        raise ConversionError(
            f"the converted graph cannot run with another number of samples on dim 0 "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); signgd_lab takes dim 0 "
            "of the input as the batch (the simulation stacks time steps on it): put the batch "
            "first (e.g. nn.MultiheadAttention(batch_first=True)) and do not fix the batch "
            "size in forward") from None
    problems, declared = [], []
    for node in gm.graph.nodes:
        if node not in dynamic or node.op in ("placeholder", "output"):
            continue
        neurons = _neurons_of(module_of(gm, node))
        if neurons:
            mod = neurons[0]
            merged = [a.name for a in node.all_input_nodes
                      if a in dynamic and not samples_alone_on_dim0(a)]
            if merged:
                problems.append(
                    f"{describe(gm, node)} ({mod.source}): its input {merged[0]} does not hold one "
                    "row per sample on dim 0 (the batch is merged with another dim, e.g. "
                    "attention windows); the spiking runtime keeps one neuron state per sample "
                    "row, so reshape the batch back to dim 0 around the nonlinearity")
            names = sorted({base_name(m.target.name) for m in neurons})
            for name in names:
                if neuron_targets is not None and name not in neuron_targets:
                    problems.append(f"{describe(gm, node)} ({mod.source}): a '{name}' neuron, "
                                    f"but these dynamics only run "
                                    f"{', '.join(sorted(neuron_targets))}; use "
                                    "dynamics='paper' or 'extended'")
            continue
        why = affine_violation(gm, node, dynamic, batch)
        if why is None:
            continue
        op = user_affine_op(gm, node, dynamic)
        if op is not None:
            declared.append((node, op))
            continue
        problems.append(f"{describe(gm, node)}: {why}")
    if declared:
        values = _record(gm, samples)
        problems += [p for node, op in declared
                     if (p := _check_user_op(gm, node, op, dynamic, values)) is not None]
    if not problems:
        mixing = _batch_mixing(gm, samples, batch)
        if mixing:
            problems.append(mixing)
    if problems:
        raise ConversionError(
            f"the converted network would not compute what the model computes: {len(problems)} "
            "op(s) are not neurons the dynamics can run, nor proven affine ops:", problems)
