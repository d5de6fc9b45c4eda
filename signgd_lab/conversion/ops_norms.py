"""Normalisations with instance statistics, written like LayerNorm (square neurons for the
variance, x1 / sqrt(x2) neurons for the division):

* ``nn.GroupNorm`` / ``F.group_norm``: LayerNorm over (channels of a group, spatial dims);
* ``nn.InstanceNorm1d/2d/3d`` without running statistics: GroupNorm with one channel per group
  (with running statistics they are affine and stay as they are);
* ``F.normalize(x, p=2, dim)``: x / sqrt(sum(x^2) + eps^2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph_utils import Emitter, module_of, node_shape
from .handlers import OpHandler, arg_of, neuron, operand_proxy, register_handler
from .recipes import Recipe


def group_norm_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy, groups: int, eps: float,
                       weight: torch.Tensor | None, bias: torch.Tensor | None) -> fx.Proxy:
    """GroupNorm of x (B, C, *S) with neurons; ``weight`` / ``bias`` per channel."""
    shape = node_shape(node.args[0])
    g = x.reshape(x.size(0), groups, -1)  # (B, G, C/G * S)
    u = g - g.mean(-1, keepdim=True)
    var = neuron(emit, node, "square", u, role="groupnorm-square").mean(-1, keepdim=True)
    n = neuron(emit, node, "rsqrt_div", u, var + eps, role="groupnorm-normalise")
    n = n.reshape(x.size(0), *shape[1:])
    per_channel = (-1, *([1] * (len(shape) - 2)))
    if weight is not None:
        n = n * emit.constant(f"{node.name}_weight", weight.detach().reshape(per_channel))
    if bias is not None:
        n = n + emit.constant(f"{node.name}_bias", bias.detach().reshape(per_channel))
    return n


def _tensor(gm: fx.GraphModule, value: object) -> torch.Tensor | None:
    if isinstance(value, fx.Node) and value.op == "get_attr":
        return getattr(gm, value.target) if "." not in value.target else \
            gm.get_parameter(value.target) if value.target in dict(gm.named_parameters()) \
            else gm.get_buffer(value.target)
    return value if isinstance(value, torch.Tensor) else None


def _group_norm(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    x = operand_proxy(emit, node)
    if mod is not None:
        return group_norm_neurons(emit, node, x, mod.num_groups, mod.eps,
                                  mod.weight if mod.affine else None,
                                  mod.bias if mod.affine else None)
    gm = emit.gm
    return group_norm_neurons(emit, node, x, int(arg_of(gm, node, "num_groups")),
                              float(arg_of(gm, node, "eps", 1e-5)),
                              _tensor(gm, arg_of(gm, node, "weight")),
                              _tensor(gm, arg_of(gm, node, "bias")))


def _group_norm_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if module_of(gm, node) is None:
        for name in ("weight", "bias"):
            value = arg_of(gm, node, name)
            if value is not None and _tensor(gm, value) is None:
                return f"group_norm with an input-dependent or computed {name} is not supported"
    return None


def _instance_stats(gm: fx.GraphModule, node: fx.Node) -> bool:
    mod = module_of(gm, node)
    return not (mod.track_running_stats and mod.running_mean is not None)


def _instance_norm(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    channels = node_shape(node.args[0])[1]
    return group_norm_neurons(emit, node, operand_proxy(emit, node), channels, mod.eps,
                              mod.weight if mod.affine else None,
                              mod.bias if mod.affine else None)


def _normalize_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if float(arg_of(gm, node, "p", 2.0)) != 2.0:
        return "F.normalize with p != 2 is not supported (only the Euclidean norm has neurons)"
    return None


def _normalize(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    x = operand_proxy(emit, node)
    dim = arg_of(emit.gm, node, "dim", 1)
    eps = float(arg_of(emit.gm, node, "eps", 1e-12))
    ss = neuron(emit, node, "square", x, role="normalize-square").sum(dim, keepdim=True)
    return neuron(emit, node, "rsqrt_div", x, ss + eps * eps, role="normalize-divide")


def _register() -> None:
    register_handler(OpHandler("group_norm", "layernorm", _group_norm,
                               "mean, square neurons, x/sqrt(var) neurons, per-channel affine",
                               (nn.GroupNorm,), (F.group_norm,), check=_group_norm_check))
    register_handler(OpHandler("instance_norm", "layernorm", _instance_norm,
                               "GroupNorm with one channel per group",
                               (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
                               applies=_instance_stats))
    register_handler(OpHandler("normalize", "layernorm", _normalize,
                               "square neurons, sum, x/sqrt(sum) neurons",
                               (), (F.normalize,), (), check=_normalize_check))


_register()
