"""Functional weight layers become modules: ``F.linear`` / ``F.conv{1,2,3}d`` calls whose weight
and bias are constants (an attention decomposition's projections, a model's own ``F.linear(x,
self.weight)``) are replaced by the ``nn.Linear`` / ``nn.ConvNd`` that computes the same thing,
holding the same tensors. The numbers do not change (the module calls the same function); what
changes is that probes, which count synaptic operations and multiply-accumulates on weight-layer
modules, see every weight layer.
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..graph_utils import attr_tensor, call_arguments, finish, op_name, unique_attr

_CONVS = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}


def _module_for(name: str, args: dict[str, object], weight: torch.Tensor,
                bias: torch.Tensor | None) -> nn.Module | None:
    """The module computing call ``name`` with these arguments (None when none does exactly)."""
    if name == "linear":
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        groups = args.get("groups", 1)
        options = {k: args[k] for k in ("stride", "padding", "dilation") if k in args}
        if not isinstance(groups, int) or any(isinstance(v, fx.Node) for v in options.values()):
            return None
        module = _CONVS[name](weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                              groups=groups, bias=bias is not None, **options)
    module.weight = nn.Parameter(weight, requires_grad=False)  # the same tensors, not copies
    if bias is not None:
        module.bias = nn.Parameter(bias, requires_grad=False)
    return module.to(weight.device).eval()


def weight_modules(gm: fx.GraphModule) -> fx.GraphModule:
    """Return a copy of ``gm`` in which every ``linear`` / ``conv1d`` / ``conv2d`` / ``conv3d``
    call with a constant weight (and a constant bias or none) is a call of the equivalent
    ``nn.Linear`` / ``nn.ConvNd`` module, named after its weight (``attn_wq_linear``)."""
    gm = copy.deepcopy(gm)
    read = set()  # attributes the replaced calls read
    for node in list(gm.graph.nodes):
        name = op_name(node) if node.op == "call_function" else None
        if name != "linear" and name not in _CONVS:
            continue
        args = call_arguments(gm, node)
        weight, bias = attr_tensor(gm, args.get("weight")), args.get("bias")
        bias_tensor = attr_tensor(gm, bias)
        if weight is None or bias is not None and bias_tensor is None or "input" not in args:
            continue  # an input-dependent or computed weight or bias: left as it is
        if weight.dim() != (2 if name == "linear" else int(name[-2]) + 2):
            continue  # a 1-D F.linear weight (a dot product): no module computes that
        module = _module_for(name, args, weight.detach(), bias_tensor)
        if module is None:
            continue
        target = unique_attr(gm, f"{args['weight'].target.replace('.', '_')}_{name}")
        gm.add_submodule(target, module)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(target, (args["input"],))
        call.meta.update(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
        read.update(a.target for a in (args["weight"], bias) if isinstance(a, fx.Node))
    gm.graph.eliminate_dead_code()
    still_read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for attr in read - still_read:  # the module holds them now
        if "." not in attr and (attr in gm._buffers or attr in gm._parameters):
            delattr(gm, attr)  # the graph's own constants (a submodule's stay: it may be called)
    return finish(gm)
