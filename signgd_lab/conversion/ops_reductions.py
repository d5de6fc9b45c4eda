"""Reductions and contractions between input-dependent tensors, with neurons:

* ``torch.max`` / ``amax`` / ``x.max(dim)`` values (and ``min`` / ``amin``, as -max(-x)) along
  given dims: trees of pairwise max neurons; ``torch.max(a, b)`` is one max neuron. The
  indices (argmax) are not a neuron output and are refused, as is a max over every dim (it
  would reduce over the batch).
* ``einsum`` of two input-dependent operands: both are aligned on one index order, multiplied
  by product neurons (broadcast) and summed over the contracted indices.
"""
from __future__ import annotations

import operator

import torch
from torch import fx

from .graph_utils import Emitter, call_arguments, node_shape
from .handlers import (OpHandler, arg_of, binary_neuron, max_tree, operand_proxy,
                       register_handler)
from .recipes import Recipe


def _is_pairwise(gm: fx.GraphModule, node: fx.Node) -> bool:
    """max(a, b) of two tensors (``torch.max(x, 1)`` binds 1 as ``other`` but means dim 1)."""
    return isinstance(call_arguments(gm, node).get("other"), fx.Node)


def _dims(gm: fx.GraphModule, node: fx.Node) -> list[int] | None:
    args = call_arguments(gm, node)
    dim = args.get("dim", args.get("other"))
    if dim is None:
        return None
    ndim = len(node_shape(node.args[0]))
    return sorted({d % ndim for d in (dim if isinstance(dim, (list, tuple)) else [dim])})


def _returns_indices(node: fx.Node) -> bool:
    return node.op == "call_method" and node.target in ("max", "min") or \
        node.op == "call_function" and getattr(node.target, "__name__", "") in ("max", "min")


def _max_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if _is_pairwise(gm, node):
        return None
    if _dims(gm, node) is None:
        return ("a max / min over every dim reduces over the batch too; pass dim= (e.g. "
                "x.flatten(1).max(1).values)")
    if _returns_indices(node):
        for user in node.users:
            key = user.args[1] if len(user.args) > 1 else None
            if not (user.op == "call_function" and (
                    (user.target is operator.getitem and key == 0) or
                    (user.target is getattr and key == "values"))):
                return "the indices of a max / min (argmax) are not a neuron output; use .values"
    return None


def _negated(gm: fx.GraphModule, node: fx.Node) -> bool:
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return name in ("min", "amin")


def _max(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy | None:
    sign = -1.0 if _negated(emit.gm, node) else 1.0
    x = operand_proxy(emit, node) * sign
    if _is_pairwise(emit.gm, node):
        other = operand_proxy(emit, node, "other")
        return sign * binary_neuron(emit, node, "max", x, other * sign, "maximum")
    shape = node_shape(node.args[0])
    keep = bool(arg_of(emit.gm, node, "keepdim", False))
    dims = _dims(emit.gm, node)
    for d in dims:
        x = max_tree(emit, node, x, d, shape[d], role="max-reduction")
    if not keep:
        for d in reversed(dims):
            x = x.squeeze(d)
    values = x * sign
    if not _returns_indices(node):
        return values
    for user in list(node.users):  # .values / [0]: the only readers _max_check lets through
        user.replace_all_uses_with(values.node)
        emit.gm.graph.erase_node(user)
    emit.gm.graph.erase_node(node)
    return None


def _einsum_operands(node: fx.Node) -> tuple[str, list[object]]:
    ops = list(node.args[1:])
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = list(ops[0])
    return node.args[0], ops


def _einsum_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    eq, ops = _einsum_operands(node)
    if len(ops) != 2 or "..." in eq or "->" not in eq:
        return ("einsum between input-dependent tensors: only two operands with an explicit "
                "'->' and no '...' are supported")
    ins = eq.replace(" ", "").split("->")[0].split(",")
    if any(len(set(s)) != len(s) for s in ins):
        return "einsum with a repeated index in one operand (a diagonal) is not supported"
    return None


def _einsum(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    eq, ops = _einsum_operands(node)
    lhs, out = eq.replace(" ", "").split("->")
    ins = lhs.split(",")
    order = list(out) + sorted({c for s in ins for c in s} - set(out))
    aligned = []
    for spec, op in zip(ins, ops):
        t = emit.proxy(op) if isinstance(op, fx.Node) else op
        present = [c for c in order if c in spec]
        t = t.permute(*[spec.index(c) for c in present])
        for pos, c in enumerate(order):  # unsqueeze the indices this operand lacks
            if c not in spec:
                t = t.unsqueeze(pos)
        aligned.append(t)
    prod = binary_neuron(emit, node, "mul", aligned[0], aligned[1], "einsum-product")
    contracted = list(range(len(out), len(order)))
    return prod.sum(contracted) if contracted else prod


def _register() -> None:
    register_handler(OpHandler("max_reduce", "neuron", _max,
                               "tree of pairwise max neurons (min: of the negations)",
                               (), (torch.max, torch.amax, torch.min, torch.amin),
                               ("max", "amax", "min", "amin"), check=_max_check))
    register_handler(OpHandler("einsum", "neuron", _einsum,
                               "broadcast product neurons summed over the contracted indices",
                               (), (torch.einsum,), (), needs_dynamic=2,
                               operands=("arg1", "arg2", "tensors", "operands"), check=_einsum_check))


_register()
