"""In-place ops made pure right after tracing.

torch.fx records ``h.relu_()`` as a node whose result may go unused while later code reads
``h``: in eager mode that ``h`` is the ReLU's output, in the graph it is the value before it, and
graph clean-up would drop the unused ReLU. Here every in-place op becomes its out-of-place form
and every later reader of the overwritten tensor reads the op's result instead. An in-place op
on a view (or on a tensor with views read later) changes other tensors through shared memory,
which a graph cannot follow: it is refused by name.
"""
from __future__ import annotations

import operator

import torch
from torch import fx

from .errors import ConversionError
from .graph_utils import call_arguments, describe, module_of, op_name

_INPLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub,
                      operator.imul: operator.mul, operator.itruediv: operator.truediv}
_VIEWS = {"view", "reshape", "permute", "transpose", "getitem", "narrow", "select", "expand",
          "squeeze", "unsqueeze", "flatten", "unflatten", "chunk", "split", "unbind", "t",
          "view_as", "expand_as", "diagonal", "movedim", "swapaxes", "contiguous", "detach",
          "to", "as_strided", "unfold"}


def _is_view(node: fx.Node) -> bool:
    return op_name(node) in _VIEWS


def _inplace_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """How ``node`` is in place: ``method`` (x.relu_()), ``function`` (torch.relu_),
    ``operator`` (x += y), ``flag`` (F.relu(x, inplace=True)), ``module`` (nn.ReLU(inplace=True))
    or ``setitem`` (x[i] = v); None when it is not."""
    if node.op == "call_method":
        name = node.target
        return "method" if name.endswith("_") and not name.endswith("__") else None
    if node.op == "call_module":
        return "module" if getattr(module_of(gm, node), "inplace", False) is True else None
    if node.op != "call_function":
        return None
    if node.target in _INPLACE_OPERATORS:
        return "operator"
    if node.target is operator.setitem:
        return "setitem"
    name = getattr(node.target, "__name__", "")
    if name.endswith("_") and not name.endswith("__") and op_name(node) is not None:
        return "function"
    if op_name(node) is not None and call_arguments(gm, node).get("inplace") is True:
        return "flag"
    return None


def _make_pure(gm: fx.GraphModule, node: fx.Node, kind: str) -> str | None:
    """Turn ``node`` into its out-of-place form; returns why it cannot be (or None)."""
    if kind == "setitem":
        return "item assignment (x[i] = v) writes into a tensor in place; build the tensor with " \
               "torch.cat / torch.where instead"
    if kind == "module":
        module_of(gm, node).inplace = False  # our traced copy, not the user's model
    elif kind == "operator":
        node.target = _INPLACE_OPERATORS[node.target]
    elif kind == "flag":
        node.args, node.kwargs = (), {**call_arguments(gm, node), "inplace": False}
    else:
        pure = node.target[:-1] if kind == "method" else node.target.__name__[:-1]
        if kind == "method" and hasattr(torch.Tensor, pure):
            node.target = pure
        elif kind == "function" and callable(getattr(torch, pure, None)):
            node.target = getattr(torch, pure)
        else:
            return f"in-place op without an out-of-place form; write it out of place"
    return None


def functionalize_inplace(gm: fx.GraphModule) -> fx.GraphModule:
    """Make every in-place op of ``gm`` pure, rewiring later readers of the overwritten tensor
    to its result (``gm`` is changed and returned). Raises :class:`ConversionError` naming the
    in-place ops on views and item assignments."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    problems = []
    for node in list(gm.graph.nodes):
        kind = _inplace_kind(gm, node)
        if kind is None:
            continue
        base = node.args[0] if node.args else next(iter(call_arguments(gm, node).values()), None)
        where = describe(gm, node)
        if not isinstance(base, fx.Node):
            continue
        later = [u for u in base.users if order.get(u, -1) > order[node]]
        aliased = (_is_view(base) and any(order.get(u, -1) > order[node]
                                          for src in base.all_input_nodes for u in src.users)) or \
            any(_is_view(u) and order[u] < order[node] and
                any(order.get(r, -1) > order[node] for r in u.users) for u in base.users)
        if aliased:
            problems.append(f"{where}: writes in place into a tensor that shares memory with "
                            "another one read later (a view); write it out of place")
            continue
        reason = _make_pure(gm, node, kind)
        if reason:
            problems.append(f"{where}: {reason}")
            continue
        for reader in later:
            reader.replace_input_with(base, node)
    if problems:
        raise ConversionError(f"{len(problems)} in-place op(s) cannot be converted:", problems)
    gm.graph.lint()
    gm.recompile()
    return gm
