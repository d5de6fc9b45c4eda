"""One registry of op handlers: which ANN op is replaced by which neurons, and the affine glue
that passes through without neurons.

A handler matches nodes by module type (subclasses included), function or tensor-method name,
optionally only when some operands depend on the input (``x * y`` is a product neuron, ``x * 2``
is glue). Handlers run in stages, in this order: ``attention`` (decomposed into matmul and
softmax), ``layernorm``, ``maxpool``, ``neuron`` (each nonlinearity becomes a :class:`NeuronOp`).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..dynamics.targets import get_target
from .graph_utils import Emitter, describe, module_of, node_shape
from .neuron_ops import MatmulNeuronOp, NeuronOp
from .recipes import Recipe

STAGES = ("attention", "layernorm", "maxpool", "neuron")

Rewrite = Callable[[Emitter, fx.Node, Recipe], "fx.Proxy | None"]


@dataclass(frozen=True)
class OpHandler:
    """How one family of ANN ops is converted.

    Attributes:
        name: registry key (``relu``, ``layer_norm``, ...).
        stage: one of :data:`STAGES`.
        modules / functions / methods: what it matches (module classes incl. subclasses,
            call_function targets, Tensor method names).
        needs_dynamic: how many operands among ``operand_positions`` must depend on the input
            for the op to be nonlinear (0: always a match).
        check: returns why a matched node cannot be converted (or None).
        rewrite: emits the replacement before the node and returns its result proxy
            (None when it rewired the users itself).
        summary: what it becomes, for tables.
    """

    name: str
    stage: str
    rewrite: Rewrite
    summary: str
    modules: tuple[type, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    needs_dynamic: int = 0
    operand_positions: tuple[int, ...] = (0, 1)
    check: Callable[[fx.GraphModule, fx.Node], str | None] | None = field(default=None)

    def matches(self, gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> bool:
        """True when ``node`` is an op of this family that needs conversion."""
        return _matches(self, gm, node, dynamic)


@dataclass(frozen=True)
class AffineOp:
    """An op that is affine in its input-dependent operands, so it passes through unchanged."""

    name: str
    modules: tuple[type, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    max_dynamic: int = 99
    operand_positions: tuple[int, ...] = (0, 1)

    def matches(self, gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> bool:
        """True when ``node`` is this op with at most ``max_dynamic`` dynamic operands."""
        return _matches(self, gm, node, dynamic)


def _arg(node: fx.Node, i: int, name: str, default: object = None) -> object:
    """Argument ``i`` of a call, given positionally or as keyword ``name``."""
    if i < len(node.args):
        return node.args[i]
    return node.kwargs.get(name, default)


_OPERAND_NAMES = ("input", "other")


def _operand(node: fx.Node, i: int) -> object:
    """Operand ``i`` of a torch op, positional or by torch's keyword name."""
    return _arg(node, i, _OPERAND_NAMES[i] if i < len(_OPERAND_NAMES) else "")


def _count_dynamic(node: fx.Node, positions: tuple[int, ...], dynamic: set[fx.Node]) -> int:
    return sum(1 for i in positions
               if isinstance(op := _operand(node, i), fx.Node) and op in dynamic)


def _matches(spec: OpHandler | AffineOp, gm: fx.GraphModule, node: fx.Node,
             dynamic: set[fx.Node]) -> bool:
    if node.op == "call_module":
        hit = bool(spec.modules) and isinstance(module_of(gm, node), spec.modules)
    elif node.op == "call_function":
        hit = any(node.target is f for f in spec.functions)
    elif node.op == "call_method":
        hit = node.target in spec.methods
    else:
        return False
    if not hit:
        return False
    n_dyn = _count_dynamic(node, spec.operand_positions, dynamic)
    if isinstance(spec, OpHandler):
        return n_dyn >= spec.needs_dynamic
    return n_dyn <= spec.max_dynamic


_HANDLERS: dict[str, OpHandler] = {}
_AFFINE: dict[str, AffineOp] = {}


def register_handler(handler: OpHandler, overwrite: bool = False) -> OpHandler:
    """Add a handler to the registry (``overwrite=True`` to replace one of the same name)."""
    if handler.stage not in STAGES:
        raise ValueError(f"unknown stage {handler.stage!r}; choose one of {STAGES}")
    if handler.name in _HANDLERS and not overwrite:
        raise ValueError(f"handler {handler.name!r} exists; pass overwrite=True to replace it")
    _HANDLERS[handler.name] = handler
    return handler


def register_affine(op: AffineOp) -> AffineOp:
    """Declare an op affine glue (it will pass through conversion unchanged)."""
    _AFFINE[op.name] = op
    return op


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


def is_affine(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node]) -> bool:
    """True when ``node`` is registered glue (affine in its dynamic operands)."""
    return any(op.matches(gm, node, dynamic) for op in _AFFINE.values())


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


def max_tree(emit: Emitter, node: fx.Node, x: fx.Proxy, dim: int, size: int) -> fx.Proxy:
    """max over ``dim`` (of static length ``size``) by a tree of pairwise max neurons:
    (..., size, ...) -> (..., 1, ...), ceil(log2(size)) levels."""
    level = 0
    while size > 1:
        half = size // 2
        pairs = neuron(emit, node, "max", x.narrow(dim, 0, half), x.narrow(dim, half, half),
                       role="softmax-max", suffix=f"_max{level}")
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


def _first(emit: Emitter, node: fx.Node) -> fx.Proxy:
    return emit.proxy(node.args[0])


def _unary(target: str) -> Rewrite:
    def rewrite(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
        return neuron(emit, node, target, _first(emit, node))

    return rewrite


def _leaky(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    slope = mod.negative_slope if mod is not None else _arg(node, 1, "negative_slope", 0.01)
    if recipe.leaky_slope == "paper":
        slope = 0.1
    return neuron(emit, node, "leaky_relu", _first(emit, node), slope=float(slope))


def _gelu(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    approx = getattr(mod, "approximate", "none") if mod is not None else _arg(node, 1, "approximate", "none")
    if recipe.gelu == "paper":
        target = "gelu"
    else:
        target = "gelu_tanh" if approx == "tanh" else "gelu_erf"
    return neuron(emit, node, target, _first(emit, node))


def _softmax(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    dim = mod.dim if mod is not None else _arg(node, 1, "dim")
    size = node_shape(node.args[0])[dim] if recipe.softmax == "max_subtract" else None
    return softmax_neurons(emit, node, _first(emit, node), dim, recipe, size)


def _softmax_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    mod = module_of(gm, node)
    dim = mod.dim if mod is not None else _arg(node, 1, "dim")
    if dim is None:
        return "softmax without an explicit dim; pass dim=-1 (or the axis you mean)"
    return None


def _binary(target: str, role: str) -> Rewrite:
    def rewrite(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
        a, b = (_operand(node, 0), _operand(node, 1))
        pa = emit.proxy(a) if isinstance(a, fx.Node) else a
        pb = emit.proxy(b) if isinstance(b, fx.Node) else b
        if not isinstance(pa, fx.Proxy):  # a python scalar numerator: a constant current
            pa = torch.ones_like(pb) * pa
        if not isinstance(pb, fx.Proxy):
            pb = torch.ones_like(pa) * pb
        return neuron(emit, node, target, pa, pb, role=role)

    return rewrite


def _matmul(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    return matmul_neurons(emit, node, emit.proxy(_operand(node, 0)), emit.proxy(_operand(node, 1)))


def _addcmul(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    base, t1, t2 = (emit.proxy(a) if isinstance(a, fx.Node) else a for a in node.args[:3])
    value = node.kwargs.get("value", 1)
    return base + value * neuron(emit, node, "mul", t1, t2, role="product")


def _softplus_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    mod = module_of(gm, node)
    beta = mod.beta if mod is not None else _arg(node, 1, "beta", 1.0)
    if beta != 1:
        return f"softplus with beta={beta}: only beta=1 has a neuron target; register a target"
    return None


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
register_handler(OpHandler("softplus", "neuron", _unary("softplus"), "softplus neuron",
                           (nn.Softplus,), (F.softplus,), (), check=_softplus_check))
register_handler(OpHandler("leaky_relu", "neuron", _leaky, "leaky_relu neuron",
                           (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_), ()))


def _gelu_modules() -> tuple[type, ...]:
    try:
        from timm.layers.activations import GELU as TimmGELU
    except ImportError:
        return (nn.GELU,)
    return (nn.GELU, TimmGELU)


register_handler(OpHandler("gelu", "neuron", _gelu, "gelu neuron", _gelu_modules(), (F.gelu,), ()))
register_handler(OpHandler("softmax", "neuron", _softmax, "exp neurons, sum, div neurons",
                           (nn.Softmax,), (F.softmax, torch.softmax), ("softmax",),
                           check=_softmax_check))
register_handler(OpHandler("matmul", "neuron", _matmul, "N*K*M product neurons summed over K",
                           (), (operator.matmul, torch.matmul, torch.bmm), ("matmul", "bmm"),
                           needs_dynamic=2))
register_handler(OpHandler("mul", "neuron", _binary("mul", "product"), "product neuron",
                           (), (operator.mul, torch.mul), ("mul",), needs_dynamic=2))
register_handler(OpHandler("div", "neuron", _binary("div", "division"), "div neuron",
                           (), (operator.truediv, torch.div), ("div",), needs_dynamic=1,
                           operand_positions=(1,)))
register_handler(OpHandler("maximum", "neuron", _binary("max", "maximum"), "max neuron",
                           (), (torch.maximum,), ("maximum",), needs_dynamic=1))
register_handler(OpHandler("addcmul", "neuron", _addcmul, "product neuron plus glue",
                           (), (torch.addcmul,), ("addcmul",), needs_dynamic=2,
                           operand_positions=(1, 2)))


# ----------------------------------------------------------------------------- affine glue

def _timm_affine_modules() -> tuple[type, ...]:
    try:
        from timm.layers import DropPath, LayerScale, LayerScale2d
        from timm.models.mlp_mixer import Affine
    except ImportError:
        return ()
    return (DropPath, LayerScale, LayerScale2d, Affine)


register_affine(AffineOp("modules", modules=(
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d,
    nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.ZeroPad2d, nn.ConstantPad2d,
    *_timm_affine_modules())))
register_affine(AffineOp("shape-and-sum", functions=(
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, getattr,
    torch.add, torch.sub, torch.flatten, torch.cat, torch.stack, torch.reshape, torch.permute,
    torch.transpose, torch.squeeze, torch.unsqueeze, torch.mean, torch.sum, torch.chunk,
    torch.split, torch.unbind, torch.roll, torch.narrow, torch.flip, torch.zeros_like,
    torch.ones_like, F.linear, F.conv1d, F.conv2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.dropout, F.pad, F.batch_norm),
    methods=(
    "reshape", "view", "permute", "transpose", "flatten", "contiguous", "mean", "sum",
    "unsqueeze", "squeeze", "expand", "expand_as", "repeat", "unbind", "chunk", "split", "add",
    "sub", "neg", "clone", "to", "type_as", "narrow", "roll", "flip", "float", "__getitem__")))
register_affine(AffineOp("scale", functions=(operator.mul, torch.mul, torch.matmul,
                                             operator.matmul, torch.bmm, torch.addcmul),
                         methods=("mul", "matmul", "bmm", "addcmul"), max_dynamic=1,
                         operand_positions=(0, 1, 2)))
register_affine(AffineOp("divide-by-constant", functions=(operator.truediv, torch.div),
                         methods=("div",), max_dynamic=0, operand_positions=(1,)))
