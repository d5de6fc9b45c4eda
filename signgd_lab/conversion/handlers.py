"""One registry of op handlers: which ANN op is replaced by which neurons, and the ops users
declare affine.

A handler matches nodes by module type (exactly, or a subclass that does not override
``forward``), function or tensor-method name, optionally only when some operands depend on the
input (``x * y`` is a product neuron, ``x * 2`` is glue). Operands are named as torch names them
(``input``, ``other``, ``tensor1``, ...; see :func:`~signgd_lab.conversion.graph_utils.call_arguments`).
Handlers run in stages, in this order: ``prepare`` (modules that are several ops, e.g. timm's
BatchNormAct2d, are split before BatchNorm folding), ``attention`` (decomposed into matmul and
softmax), ``layernorm``, ``maxpool``, ``neuron`` (each nonlinearity becomes a :class:`NeuronOp`).
What may stay between neurons is decided by the positive list of :mod:`.affine`, not here.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..dynamics.targets import get_target
from .affine import is_proven_affine
from .graph_utils import Emitter, call_arguments, describe, module_of, node_shape
from .lazy_imports import resolve_loaded
from .neuron_ops import MatmulNeuronOp, NeuronOp
from .recipes import Recipe

STAGES = ("prepare", "attention", "layernorm", "maxpool", "neuron")

Rewrite = Callable[[Emitter, fx.Node, Recipe], "fx.Proxy | None"]


@dataclass(frozen=True)
class OpHandler:
    """How one family of ANN ops is converted.

    Attributes:
        name: registry key (``relu``, ``layer_norm``, ...).
        stage: one of :data:`STAGES`.
        modules / functions / methods: what it matches (module classes, exactly or subclasses
            that keep the class's ``forward``; call_function targets; Tensor method names). A
            module class of an optional package is given by its dotted name, e.g.
            ``"timm.layers.GELU"``: it is looked up when nodes are matched, and only if the
            package is already imported (:mod:`.lazy_imports`), so conversion never imports it.
        needs_dynamic: how many of the ``operands`` must depend on the input for the op to be
            nonlinear (0: always a match).
        operands: torch's names of the operands that ``needs_dynamic`` counts.
        check: returns why a matched node cannot be converted (or None).
        applies: an extra condition on the node for the handler to match (None: always).
        rewrite: emits the replacement before the node and returns its result proxy
            (None when it rewired the users itself).
        summary: what it becomes, for tables.
    """

    name: str
    stage: str
    rewrite: Rewrite
    summary: str
    modules: tuple[type | str, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    needs_dynamic: int = 0
    operands: tuple[str, ...] = ("input", "other")
    check: Callable[[fx.GraphModule, fx.Node], str | None] | None = field(default=None)
    applies: Callable[[fx.GraphModule, fx.Node], bool] | None = field(default=None)

    def matches(self, gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> bool:
        """True when ``node`` is an op of this family that needs conversion."""
        return _matches(self, gm, node, dynamic) and \
            (self.applies is None or self.applies(gm, node))


@dataclass(frozen=True)
class AffineOp:
    """An op a user declares affine in its input-dependent operands, so it passes through
    unchanged. Declared ops are not taken on trust: the end-of-conversion audit checks on
    calibration inputs that each one is affine and keeps the samples of a batch apart.

    Attributes:
        name: registry key.
        modules / functions / methods: what it matches (as for :class:`OpHandler`).
        max_dynamic: at most this many of the ``operands`` may depend on the input.
        operands: torch's names of the operands that ``max_dynamic`` counts.
    """

    name: str
    modules: tuple[type | str, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    max_dynamic: int = 99
    operands: tuple[str, ...] = ("input", "other")

    def matches(self, gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> bool:
        """True when ``node`` is this op with at most ``max_dynamic`` dynamic operands."""
        return _matches(self, gm, node, dynamic)


def _arg(node: fx.Node, i: int, name: str, default: object = None) -> object:
    """Argument ``i`` of a call, given positionally or as keyword ``name``."""
    if i < len(node.args):
        return node.args[i]
    return node.kwargs.get(name, default)


def arg_of(gm: fx.GraphModule, node: fx.Node, name: str, default: object = None) -> object:
    """Argument ``name`` of a call by torch's keyword name (positional or keyword in the call)."""
    value = call_arguments(gm, node).get(name, default)
    return default if value is None else value


def _count_dynamic(gm: fx.GraphModule, node: fx.Node, names: tuple[str, ...],
                   dynamic: set[fx.Node]) -> int:
    args = call_arguments(gm, node)
    values = []
    for n in names:  # a list operand (torch.cat, einsum) counts each of its tensors
        v = args.get(n)
        values.extend(v if isinstance(v, (list, tuple)) else [v])
    return sum(1 for v in values if isinstance(v, fx.Node) and v in dynamic)


def module_matches(mod: nn.Module | None, classes: tuple[type | str, ...]) -> bool:
    """``mod`` is one of ``classes`` exactly, or a subclass that keeps its ``forward`` (a
    subclass that overrides ``forward`` may compute more, e.g. timm's BatchNormAct2d). Dotted
    names in ``classes`` count only while their package is imported (:mod:`.lazy_imports`)."""
    if mod is None:
        return False
    kind = type(mod)
    classes = resolve_loaded(classes)
    return any(kind is c or (issubclass(kind, c) and kind.forward is c.forward) for c in classes)


def _matches(spec: OpHandler | AffineOp, gm: fx.GraphModule, node: fx.Node,
             dynamic: set[fx.Node]) -> bool:
    if node.op == "call_module":
        hit = module_matches(module_of(gm, node), spec.modules)
    elif node.op == "call_function":
        hit = any(node.target is f for f in spec.functions)
    elif node.op == "call_method":
        hit = node.target in spec.methods
    else:
        return False
    if not hit:
        return False
    if isinstance(spec, OpHandler):
        return spec.needs_dynamic == 0 or \
            _count_dynamic(gm, node, spec.operands, dynamic) >= spec.needs_dynamic
    return _count_dynamic(gm, node, spec.operands, dynamic) <= spec.max_dynamic


_HANDLERS: dict[str, OpHandler] = {}
_AFFINE: dict[str, AffineOp] = {}


def register_handler(handler: OpHandler, overwrite: bool = False) -> OpHandler:
    """Add a handler to the registry (``overwrite=True`` to replace one of the same name;
    without it a name already registered raises ValueError)."""
    if handler.stage not in STAGES:
        raise ValueError(f"unknown stage {handler.stage!r}; choose one of {STAGES}")
    if handler.name in _HANDLERS and not overwrite:
        raise ValueError(f"handler {handler.name!r} already exists; pass overwrite=True to "
                         "replace it")
    _HANDLERS[handler.name] = handler
    return handler


def register_affine(op: AffineOp, overwrite: bool = False) -> AffineOp:
    """Declare an op affine glue (it passes through conversion unchanged, after the audit has
    checked on calibration inputs that it is affine; see :class:`AffineOp`). Re-declaring a
    name raises ValueError unless ``overwrite=True``, which replaces the earlier op."""
    if op.name in _AFFINE and not overwrite:
        raise ValueError(f"affine op {op.name!r} already exists; pass overwrite=True to "
                         "replace it")
    _AFFINE[op.name] = op
    return op


def unregister_affine(name: str) -> None:
    """Remove an op declared with :func:`register_affine`."""
    _AFFINE.pop(name, None)


def unregister_handler(name: str) -> None:
    """Remove a handler (built-in ones included: the op is then refused by name)."""
    _HANDLERS.pop(name, None)


def user_affine_op(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> AffineOp | None:
    """The user-declared affine op that matches ``node``, if any."""
    return next((op for op in _AFFINE.values() if op.matches(gm, node, dynamic)), None)


def list_handlers(stage: str | None = None) -> list[str]:
    """Names of the registered op handlers, in stage order."""
    return [h.name for s in STAGES for h in _HANDLERS.values()
            if s == h.stage and (stage is None or stage == s)]


def get_handler(name: str) -> OpHandler:
    """The handler registered as ``name``."""
    return _HANDLERS[name]


def handlers_for(stage: str) -> list[OpHandler]:
    """The handlers of one stage."""
    return [h for h in _HANDLERS.values() if h.stage == stage]


def find_handler(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> OpHandler | None:
    """The handler that converts ``node``, if any."""
    for h in _HANDLERS.values():
        if h.matches(gm, node, dynamic):
            return h
    return None


def is_affine(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node],
              batch: dict[fx.Node, tuple[int, ...]] | None = None) -> bool:
    """True when ``node`` is on the positive list of affine ops (meeting its conditions) or
    declared affine by the user (which the audit then checks numerically)."""
    return is_proven_affine(gm, node, dynamic, batch) or \
        user_affine_op(gm, node, dynamic) is not None


# ----------------------------------------------------------------------------- helpers

def source_of(gm: fx.GraphModule, node: fx.Node) -> str:
    """Short description of the op a neuron replaces."""
    return describe(gm, node)


def neuron_name(node: fx.Node, target: str, suffix: str = "") -> str:
    """``<target>_<module path or node name><suffix>``, e.g. ``relu_features_2``."""
    origin = node.target.replace(".", "_") if node.op == "call_module" else node.name
    return f"{target}_{origin}{suffix}"


def neuron(emit: Emitter, node: fx.Node, target: str, *inputs: object, role: str = "activation",
           suffix: str = "", **params: float) -> fx.Proxy:
    """Emit a :class:`NeuronOp` with ``target`` on ``inputs`` (proxies)."""
    op = NeuronOp(get_target(target, **params), source_of(emit.gm, node), role)
    return emit.module(neuron_name(node, target, suffix), op, *inputs)


def matmul_neurons(emit: Emitter, node: fx.Node, a: fx.Proxy, b: fx.Proxy, suffix: str = "",
                   role: str = "matmul") -> fx.Proxy:
    """Emit product neurons for a @ b between two input-dependent tensors."""
    op = MatmulNeuronOp(get_target("mul"), source_of(emit.gm, node), role)
    return emit.module(neuron_name(node, "mul", suffix), op, a, b)


def max_tree(emit: Emitter, node: fx.Node, x: fx.Proxy, dim: int, size: int,
             role: str = "softmax-max") -> fx.Proxy:
    """max over ``dim`` (of static length ``size``) by a tree of pairwise max neurons:
    (..., size, ...) -> (..., 1, ...), ceil(log2(size)) levels."""
    level = 0
    while size > 1:
        half = size // 2
        pairs = neuron(emit, node, "max", x.narrow(dim, 0, half), x.narrow(dim, half, half),
                       role=role, suffix=f"_max{level}")
        if size % 2:  # the odd element goes up a level unpaired
            pairs = torch.cat([pairs, x.narrow(dim, 2 * half, 1)], dim)
        x, size, level = pairs, half + size % 2, level + 1
    return x


def softmax_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy, dim: int, recipe: Recipe,
                    size: int | None = None) -> fx.Proxy:
    """softmax(x) = exp(x) / sum(exp(x)) with exp and div neurons; with the ``max_subtract``
    recipe the row maximum (max neurons) is subtracted first. ``size``: length of ``dim``."""
    if recipe.softmax == "max_subtract":
        if size is None:
            raise ValueError("max-subtracted softmax needs the static size of the softmax dim")
        x = x - max_tree(emit, node, x, dim, size)
    e = neuron(emit, node, "exp", x, role="softmax-exp")
    total = e.sum(dim, keepdim=True)
    return neuron(emit, node, "div", e, total, role="softmax-div")


def operand_proxy(emit: Emitter, node: fx.Node, name: str = "input") -> object:
    """Argument ``name`` of ``node`` as a proxy (a node) or as it is (a constant)."""
    value = arg_of(emit.gm, node, name)
    return emit.proxy(value) if isinstance(value, fx.Node) else value


def _first(emit: Emitter, node: fx.Node) -> fx.Proxy:
    return emit.proxy(node.args[0])


def _unary(target: str) -> Rewrite:
    def rewrite(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
        return neuron(emit, node, target, _first(emit, node))

    return rewrite


def _leaky(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    slope = mod.negative_slope if mod is not None else arg_of(emit.gm, node, "negative_slope", 0.01)
    if recipe.leaky_slope == "paper":
        slope = 0.1
    return neuron(emit, node, "leaky_relu", _first(emit, node), slope=float(slope))


def _gelu(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    approx = getattr(mod, "approximate", "none") if mod is not None else \
        arg_of(emit.gm, node, "approximate", "none")
    if recipe.gelu == "paper":
        target = "gelu"
    else:
        target = "gelu_tanh" if approx == "tanh" else "gelu_erf"
    return neuron(emit, node, target, _first(emit, node))


def softmax_dim(gm: fx.GraphModule, node: fx.Node) -> int | None:
    """The dim of a softmax-like node (module attribute or ``dim`` argument)."""
    mod = module_of(gm, node)
    return mod.dim if mod is not None else arg_of(gm, node, "dim")


def _softmax(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    dim = softmax_dim(emit.gm, node)
    size = node_shape(node.args[0])[dim] if recipe.softmax == "max_subtract" else None
    return softmax_neurons(emit, node, _first(emit, node), dim, recipe, size)


def _log_softmax(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    """log_softmax(x) = s - log(sum(exp(s))), s = x minus the row maximum (max neurons) with
    the ``max_subtract`` recipe, else x: exp neurons, a sum and one log neuron per row."""
    dim = softmax_dim(emit.gm, node)
    x = _first(emit, node)
    if recipe.softmax == "max_subtract":
        x = x - max_tree(emit, node, x, dim, node_shape(node.args[0])[dim])
    total = neuron(emit, node, "exp", x, role="softmax-exp").sum(dim, keepdim=True)
    return x - neuron(emit, node, "log", total, role="log-softmax-log")


def softmax_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """Refuse a softmax-like node without an explicit dim."""
    if softmax_dim(gm, node) is None:
        return "softmax without an explicit dim; pass dim=-1 (or the axis you mean)"
    return None


def constant_current(like: fx.Proxy, value: object) -> fx.Proxy:
    """A python number (or a static tensor) as a current of ``like``'s shape."""
    return torch.ones_like(like) * value


def binary_neuron(emit: Emitter, node: fx.Node, target: str, a: object, b: object,
                  role: str, suffix: str = "") -> fx.Proxy:
    """A two-input neuron on ``a`` and ``b``; a python number becomes a constant current."""
    if not isinstance(a, fx.Proxy):
        a = constant_current(b, a)
    if not isinstance(b, fx.Proxy):
        b = constant_current(a, b)
    return neuron(emit, node, target, a, b, role=role, suffix=suffix)


def _binary(target: str, role: str) -> Rewrite:
    def rewrite(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
        return binary_neuron(emit, node, target, operand_proxy(emit, node, "input"),
                             operand_proxy(emit, node, "other"), role)

    return rewrite


def _matmul(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    second = "mat2" if "mat2" in call_arguments(emit.gm, node) else "other"
    return matmul_neurons(emit, node, operand_proxy(emit, node, "input"),
                          operand_proxy(emit, node, second))


def _addcmul(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    base, t1, t2 = (operand_proxy(emit, node, n) for n in ("input", "tensor1", "tensor2"))
    value = arg_of(emit.gm, node, "value", 1)
    return base + value * binary_neuron(emit, node, "mul", t1, t2, "product")


ACTIVATIONS = {
    "relu": ((nn.ReLU,), (F.relu, torch.relu, torch.relu_, F.relu_), ("relu", "relu_")),
    "silu": ((nn.SiLU,), (F.silu,), ()),
    "sigmoid": ((nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",)),
    "tanh": ((nn.Tanh,), (torch.tanh, F.tanh), ("tanh",)),
    "abs": ((), (torch.abs, operator.abs), ("abs",)),
    "exp": ((), (torch.exp,), ("exp",)),
}
for _name, (_mods, _fns, _meths) in ACTIVATIONS.items():
    register_handler(OpHandler(_name, "neuron", _unary(_name), f"{_name} neuron",
                               _mods, _fns, _meths))
register_handler(OpHandler("leaky_relu", "neuron", _leaky, "leaky_relu neuron",
                           (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_), ("leaky_relu",)))


register_handler(OpHandler("gelu", "neuron", _gelu, "gelu neuron", (nn.GELU, "timm.layers.GELU"),
                           (F.gelu,), ()))
register_handler(OpHandler("softmax", "neuron", _softmax, "exp neurons, sum, div neurons",
                           (nn.Softmax,), (F.softmax, torch.softmax), ("softmax",),
                           check=softmax_check))
register_handler(OpHandler("log_softmax", "neuron", _log_softmax, "exp neurons, sum, log neurons",
                           (nn.LogSoftmax,), (F.log_softmax, torch.log_softmax), ("log_softmax",),
                           check=softmax_check))
register_handler(OpHandler("matmul", "neuron", _matmul, "N*K*M product neurons summed over K",
                           (), (operator.matmul, torch.matmul, torch.bmm), ("matmul", "bmm"),
                           needs_dynamic=2, operands=("input", "other", "mat2")))
register_handler(OpHandler("mul", "neuron", _binary("mul", "product"), "product neuron",
                           (), (operator.mul, torch.mul), ("mul",), needs_dynamic=2))
register_handler(OpHandler("div", "neuron", _binary("div", "division"), "div neuron",
                           (), (operator.truediv, torch.div), ("div",), needs_dynamic=1,
                           operands=("other",)))
register_handler(OpHandler("maximum", "neuron", _binary("max", "maximum"), "max neuron",
                           (), (torch.maximum,), ("maximum",), needs_dynamic=1))
register_handler(OpHandler("addcmul", "neuron", _addcmul, "product neuron plus glue",
                           (), (torch.addcmul,), ("addcmul",), needs_dynamic=2,
                           operands=("tensor1", "tensor2")))
