"""Helpers shared by the passes: which nodes carry input-dependent values, shape metadata,
and emitting new nodes before an existing one."""
from __future__ import annotations

import operator
import re
from typing import NamedTuple

import torch
from torch import fx, nn

_SHAPE_METHODS = {"size", "dim", "numel", "ndimension"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device"}


_ASSERTS = {torch._assert, torch.fx._symbolic_trace._assert_is_none}
_COMPARISONS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge}


def _is_assert(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _ASSERTS


def _only_checked(node: fx.Node) -> bool:
    """A value used only by assertions (fx guards for bound arguments, shape checks)."""
    return bool(node.users) and all(
        _is_assert(u) or (u.op == "call_function" and u.target in _COMPARISONS and _only_checked(u))
        for u in node.users)


def is_shape_node(node: fx.Node) -> bool:
    """True for nodes that read metadata (x.shape, x.size(0), ...) or only feed assertions,
    rather than carrying values."""
    if _is_assert(node) or _only_checked(node):
        return True
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] in _SHAPE_ATTRS:
        return True
    return False


def dynamic_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the network input (placeholders and everything downstream
    of them through value-carrying ops). Parameters, constants and shape reads are static."""
    dynamic: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if not _only_checked(node):
                dynamic.add(node)
        elif node.op in ("call_function", "call_method", "call_module", "output"):
            if is_shape_node(node):
                continue
            if any(a in dynamic for a in node.all_input_nodes):
                dynamic.add(node)
    return dynamic


class TensorMeta(NamedTuple):
    """Shape and dtype of the tensor a node computes (``node.meta['tensor_meta']``)."""

    shape: torch.Size
    dtype: torch.dtype


class _ShapeRecorder(fx.Interpreter):
    """Runs a graph on real tensors and records each node's :class:`TensorMeta` (a tuple of
    them for tuple results). torch.fx's ShapeProp does the same but imports torch's symbolic
    shape machinery (sympy, about a second) on its first call."""

    def run_node(self, n: fx.Node) -> object:
        try:
            result = super().run_node(n)
        except Exception as exc:
            raise RuntimeError(f"shape propagation failed at node {n.format_node()}: "
                               f"{type(exc).__name__}: {exc}") from exc
        found = False

        def meta(obj: object) -> object:
            nonlocal found
            if isinstance(obj, torch.Tensor):
                found = True
                return TensorMeta(obj.shape, obj.dtype)
            return obj

        value = fx.node.map_aggregate(result, meta)
        if found:
            n.meta["tensor_meta"] = value
        n.meta["type"] = type(result)
        return result


def propagate_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Annotate every node with ``meta['tensor_meta']`` by running ``example`` through ``gm``."""
    with torch.no_grad():
        _ShapeRecorder(gm).run(example)


def _shape_of(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta")
    return meta.shape if meta is not None and hasattr(meta, "shape") else None


def batch_dims(gm: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, tuple[int, ...]]:
    """For every node with a tensor value, the dims whose size follows the batch size (found
    by propagating shapes with batches of 2 samples and 1): where a node carries the batch.
    Records in ``meta['rows_per_sample']`` how many rows of dim 0 each sample has (None when
    dim 0 does not grow with the batch). Ends with the shapes of the one-sample batch in
    ``meta['tensor_meta']``."""
    runs = []
    for batch in (2, 1):
        propagate_shapes(gm, example[:1].expand(batch, *example.shape[1:]).clone())
        runs.append({n: _shape_of(n) for n in gm.graph.nodes})
    dims = {}
    for node in gm.graph.nodes:
        two, one = runs[0][node], runs[1][node]
        if two is not None and one is not None and len(two) == len(one):
            dims[node] = tuple(i for i, (p, q) in enumerate(zip(two, one)) if p != q)
            grows = len(one) and two[0] == 2 * one[0] and one[0] >= 1
            node.meta["rows_per_sample"] = int(one[0]) if grows else None
    return dims


def samples_alone_on_dim0(node: fx.Node) -> bool:
    """True when dim 0 of ``node`` holds exactly one row per sample (as :func:`batch_dims`
    recorded); False when the batch is merged with another dim there (e.g. attention windows)
    or sits elsewhere."""
    return node.meta.get("rows_per_sample") == 1


_OPERATOR_NAMES = {operator.add: "add", operator.sub: "sub", operator.mul: "mul",
                   operator.truediv: "div", operator.neg: "neg", operator.pos: "pos",
                   operator.getitem: "getitem", operator.matmul: "matmul", operator.pow: "pow",
                   operator.abs: "abs", getattr: "getattr", operator.iadd: "add",
                   operator.isub: "sub", operator.imul: "mul", operator.itruediv: "div",
                   operator.floordiv: "floordiv", operator.mod: "mod", operator.gt: "gt",
                   operator.lt: "lt", operator.ge: "ge", operator.le: "le", operator.eq: "eq",
                   operator.ne: "ne"}


def op_name(node: fx.Node) -> str | None:
    """The torch name of a node's op: ``add`` for ``operator.add``, ``torch.add`` and
    ``x.add(...)``; ``relu`` for ``F.relu``. None for modules and for functions outside torch
    and :mod:`operator` (a user function named ``add`` is not torch's)."""
    if node.op == "call_method":
        return node.target
    if node.op != "call_function":
        return None
    if node.target in _OPERATOR_NAMES:
        return _OPERATOR_NAMES[node.target]
    module = getattr(node.target, "__module__", None) or ""
    name = getattr(node.target, "__name__", "")
    if module.startswith("torch") or module == "torch._C._nn" or module == "" and \
            getattr(torch, name, None) is node.target:
        return name
    return None


_POSITIONAL = ("input", "other")


def call_arguments(gm: fx.GraphModule, node: fx.Node) -> dict[str, object]:
    """Every argument of a call by torch's keyword names (``input``, ``other``, ``dim``, ...;
    for tensor methods ``self`` is ``input``), from torch.fx's normalisation where the op
    has a signature; positional arguments it cannot name are ``arg<i>``."""
    pair = None
    try:
        if node.op == "call_method":
            fn = getattr(torch, node.target, None)
            if callable(fn):
                pair = fx.operator_schemas.normalize_function(
                    fn, tuple(node.args), dict(node.kwargs), normalize_to_only_use_kwargs=True)
        elif node.op in ("call_function", "call_module"):
            pair = node.normalized_arguments(gm, normalize_to_only_use_kwargs=True)
    except Exception:  # fx cannot match every overload; fall back to positions
        pair = None
    if pair is not None:
        return dict(pair.kwargs)
    fn = getattr(torch, node.target, None) if node.op == "call_method" else node.target
    bound = _bind_any_overload(fn, node) if node.op != "call_module" else None
    if bound is not None:
        return bound
    names = _POSITIONAL if node.op == "call_method" or node.target in _OPERATOR_NAMES else ()
    out = {(names[i] if i < len(names) else f"arg{i}"): a for i, a in enumerate(node.args)}
    out.update(node.kwargs)
    return out


def _bind_any_overload(fn: object, node: fx.Node) -> dict[str, object] | None:
    """Arguments bound to the first of torch's signatures for ``fn`` that accepts them (the
    overloads of an op share their parameter names, e.g. ``mul(input, other)``)."""
    try:
        signatures = fx.operator_schemas.get_signature_for_torch_op(fn) or []
    except Exception:  # not a torch op
        return None
    for sig in signatures:
        try:
            bound = sig.bind(*node.args, **node.kwargs)
        except TypeError:
            continue
        bound.apply_defaults()
        return dict(bound.arguments)
    return None


def node_shape(node: fx.Node) -> torch.Size:
    """Shape recorded by :func:`propagate_shapes` (raises if the node has none)."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise RuntimeError(f"node {node.name} has no shape metadata; run propagate_shapes first")
    return meta.shape


def attr_tensor(gm: fx.GraphModule, node: object) -> torch.Tensor | None:
    """The tensor a get_attr node reads (a buffer, parameter or plain attribute; None for
    anything else)."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
        return value if isinstance(value, torch.Tensor) else None
    return None


def unique_attr(gm: fx.GraphModule, base: str) -> str:
    """A free attribute name on ``gm`` derived from ``base``."""
    base = re.sub(r"\W", "_", base).strip("_") or "n"
    name, i = base, 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


class Emitter:
    """Builds replacement nodes before ``anchor`` with ordinary torch code on fx Proxies.

    ``emit.proxy(node)`` wraps an existing node; torch functions and methods on proxies append
    nodes; ``emit.module(name, module, *args)`` adds a submodule call; ``emit.constant`` adds a
    buffer. ``emit.replace(anchor, proxy)`` reroutes the anchor's users and erases it.
    """

    def __init__(self, gm: fx.GraphModule, anchor: fx.Node) -> None:
        self.gm = gm
        self.anchor = anchor
        self.tracer = fx.proxy.GraphAppendingTracer(gm.graph)
        self._ctx = gm.graph.inserting_before(anchor)

    def __enter__(self) -> "Emitter":
        self._bounds = (self.anchor.prev, self.anchor.next)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        # the new nodes were traced inside the anchor's module: say so in their metadata
        stack = self.anchor.meta.get("nn_module_stack")
        before, after = self._bounds
        node = before.next
        while stack and node is not after and node is not self.anchor and node.op != "root":
            node.meta.setdefault("nn_module_stack", stack)
            node = node.next

    def proxy(self, node: fx.Node) -> fx.Proxy:
        """Wrap a node so torch code on it emits graph nodes."""
        return fx.Proxy(node, self.tracer)

    def module(self, base: str, module: nn.Module, *args: object) -> fx.Proxy:
        """Register ``module`` under a fresh name derived from ``base`` and call it."""
        name = unique_attr(self.gm, base)
        self.gm.add_submodule(name, module)
        raw = tuple(a.node if isinstance(a, fx.Proxy) else a for a in args)
        return fx.Proxy(self.gm.graph.call_module(name, raw), self.tracer)

    def call(self, path: str, *args: object) -> fx.Proxy:
        """Call the existing submodule at ``path``."""
        raw = tuple(a.node if isinstance(a, fx.Proxy) else a for a in args)
        return fx.Proxy(self.gm.graph.call_module(path, raw), self.tracer)

    def constant(self, base: str, value: torch.Tensor) -> fx.Proxy:
        """Register ``value`` as a buffer (a copy) and read it with a get_attr node."""
        name = unique_attr(self.gm, base)
        self.gm.register_buffer(name, value.detach().clone())
        return fx.Proxy(self.gm.graph.get_attr(name), self.tracer)

    def replace(self, result: fx.Proxy) -> None:
        """Point every user of the anchor at ``result`` and erase the anchor (the result computes
        the same tensor, so it inherits the anchor's shape metadata)."""
        for key, value in self.anchor.meta.items():
            result.node.meta.setdefault(key, value)
        self.anchor.replace_all_uses_with(result.node)
        self.gm.graph.erase_node(self.anchor)


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    """End of every pass: drop unused nodes, check the graph, regenerate code."""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The submodule a call_module node calls (None for other nodes)."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def module_path(node: fx.Node) -> str | None:
    """Path of the innermost model module a node was traced in (None at the top level)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.keys())[-1] if isinstance(stack, dict) else None
    return str(path) if path else None


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """A one-line human description of a node: op, name, module path and type."""
    where = module_path(node)
    suffix = f" in '{where}'" if where and node.op != "call_module" else ""
    return _describe(gm, node) + suffix


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return f"module {type(mod).__module__}.{type(mod).__name__} at '{node.target}' (node {node.name})"
    if node.op == "call_function":
        fn = getattr(node.target, "__name__", str(node.target))
        mod = getattr(node.target, "__module__", "") or ""
        return f"function {mod + '.' if mod else ''}{fn} (node {node.name})"
    if node.op == "call_method":
        return f"method Tensor.{node.target} (node {node.name})"
    return f"{node.op} {node.target} (node {node.name})"
