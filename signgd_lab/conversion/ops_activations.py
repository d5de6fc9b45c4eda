"""Elementwise nonlinearities written with the existing neuron targets (each rewrite is exact
on the ANN):

=====================  ===============================================================
clamp(x, a, b)         a + relu(x - a) - relu(x - b)   (relu6, hardtanh, clamp(min=..))
minimum(a, b)          -max(-a, -b)
hardsigmoid(x)         clamp(x / 6 + 1/2, 0, 1)
hardswish(x)           x * hardsigmoid(x)               (product neuron)
elu(x)                 relu(x) + alpha (exp(x - relu(x)) - 1)
mish(x)                x * tanh(softplus(x))
prelu(x)               a x + (1 - a) relu(x)            (a: the module's slopes, per channel)
softplus(x, beta)      softplus(beta x) / beta
glu(x, dim)            a * sigmoid(b), (a, b) = x.chunk(2, dim)
x ** 2, square         square neuron;  x ** 3 = x * x^2;  x ** 0.5 = sqrt;  x ** -0.5 = rsqrt
sqrt(x), rsqrt(x)      x / sqrt(x) and 1 / sqrt(x) with the x1 / sqrt(x2) neuron
=====================  ===============================================================
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph_utils import Emitter, module_of, node_shape
from .handlers import (OpHandler, arg_of, binary_neuron, neuron, operand_proxy,
                       register_handler)
from .recipes import Recipe


def clamp_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy, low: object, high: object,
                  suffix: str = "") -> fx.Proxy:
    """clamp(x, low, high) = low + relu(x - low) - relu(x - high) (either bound may be None)."""
    if low is None and high is None:
        return x
    if low is None:  # min(x, high) = high - relu(high - x)
        return high - neuron(emit, node, "relu", high - x, suffix=f"{suffix}_hi")
    out = low + neuron(emit, node, "relu", x - low, suffix=f"{suffix}_lo")
    if high is not None:
        out = out - neuron(emit, node, "relu", x - high, suffix=f"{suffix}_hi")
    return out


def _bounds(gm: fx.GraphModule, node: fx.Node) -> tuple[object, object]:
    mod = module_of(gm, node)
    if isinstance(mod, nn.Hardtanh):  # nn.ReLU6 is a Hardtanh(0, 6)
        return mod.min_val, mod.max_val
    name = getattr(node.target, "__name__", node.target)
    if name in ("relu6",):
        return 0.0, 6.0
    if name in ("hardtanh", "hardtanh_"):
        return arg_of(gm, node, "min_val", -1.0), arg_of(gm, node, "max_val", 1.0)
    return arg_of(gm, node, "min"), arg_of(gm, node, "max")


def _clamp(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    low, high = _bounds(emit.gm, node)
    low = emit.proxy(low) if isinstance(low, fx.Node) else low
    high = emit.proxy(high) if isinstance(high, fx.Node) else high
    return clamp_neurons(emit, node, operand_proxy(emit, node), low, high)


def hardsigmoid_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy) -> fx.Proxy:
    """hardsigmoid(x) = clamp(x / 6 + 1/2, 0, 1)."""
    return clamp_neurons(emit, node, x / 6 + 0.5, 0.0, 1.0)


def _hardsigmoid(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    return hardsigmoid_neurons(emit, node, operand_proxy(emit, node))


def _hardswish(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    x = operand_proxy(emit, node)
    return binary_neuron(emit, node, "mul", x, hardsigmoid_neurons(emit, node, x), "product")


def _elu(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    alpha = float(mod.alpha if mod is not None else arg_of(emit.gm, node, "alpha", 1.0))
    x = operand_proxy(emit, node)
    pos = neuron(emit, node, "relu", x)
    return pos + alpha * (neuron(emit, node, "exp", x - pos) - 1)


def _mish(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    x = operand_proxy(emit, node)
    t = neuron(emit, node, "tanh", neuron(emit, node, "softplus", x))
    return binary_neuron(emit, node, "mul", x, t, "product")


def _prelu(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    x = operand_proxy(emit, node)
    weight = mod.weight.detach() if mod is not None else arg_of(emit.gm, node, "weight")
    if isinstance(weight, torch.Tensor):
        ndim = len(node_shape(node.args[0]))
        shape = (-1, *([1] * (ndim - 2))) if weight.numel() > 1 and ndim >= 2 else (-1,)
        a = emit.constant(f"{node.name}_slope", weight.reshape(shape) if weight.numel() > 1
                          else weight.reshape(()))
    else:
        a = emit.proxy(weight)
    return a * x + (1 - a) * neuron(emit, node, "relu", x)


def _softplus(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    beta = float(mod.beta if mod is not None else arg_of(emit.gm, node, "beta", 1.0))
    x = operand_proxy(emit, node)
    if beta == 1.0:
        return neuron(emit, node, "softplus", x)
    return neuron(emit, node, "softplus", x * beta) / beta


def _glu(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    dim = mod.dim if mod is not None else arg_of(emit.gm, node, "dim", -1)
    a, b = operand_proxy(emit, node).chunk(2, dim)
    return binary_neuron(emit, node, "mul", a, neuron(emit, node, "sigmoid", b), "product")


def _exponent(gm: fx.GraphModule, node: fx.Node) -> object:
    if getattr(node.target, "__name__", node.target) == "square":
        return 2
    return arg_of(gm, node, "exponent", arg_of(gm, node, "other"))


def _pow_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    e = _exponent(gm, node)
    if e not in (2, 3, 0.5, -0.5, 1, -1):
        return (f"x ** {e!r}: only the exponents 2, 3, 0.5, -0.5, 1 and -1 have neurons; write "
                "it with those or register a target")
    return None


def _sqrt_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy) -> fx.Proxy:
    return neuron(emit, node, "rsqrt_div", x, x, role="sqrt")


def _rsqrt_neurons(emit: Emitter, node: fx.Node, x: fx.Proxy) -> fx.Proxy:
    return neuron(emit, node, "rsqrt_div", torch.ones_like(x), x, role="rsqrt")


def _pow(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    x = operand_proxy(emit, node)
    e = _exponent(emit.gm, node)
    if e == 1:
        return x
    if e == -1:
        return binary_neuron(emit, node, "div", 1.0, x, "division")
    if e == 0.5:
        return _sqrt_neurons(emit, node, x)
    if e == -0.5:
        return _rsqrt_neurons(emit, node, x)
    sq = neuron(emit, node, "square", x)
    return sq if e == 2 else binary_neuron(emit, node, "mul", x, sq, "product")


def _sqrt(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    return _sqrt_neurons(emit, node, operand_proxy(emit, node))


def _rsqrt(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    return _rsqrt_neurons(emit, node, operand_proxy(emit, node))


def _minimum(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    a, b = operand_proxy(emit, node, "input"), operand_proxy(emit, node, "other")
    return -binary_neuron(emit, node, "max", -a, -b, "minimum")


def _is_pow_of_dynamic_base(gm: fx.GraphModule, node: fx.Node) -> bool:
    """x ** c with a constant exponent (2 ** x is an exp, not handled here)."""
    base = node.args[0] if node.args else None
    return isinstance(base, fx.Node) and not isinstance(_exponent(gm, node), fx.Node)


def _register() -> None:
    clamp_fns = (torch.clamp, torch.clip, torch.clamp_min, torch.clamp_max, F.relu6, F.hardtanh)
    register_handler(OpHandler("clamp", "neuron", _clamp, "relu neurons: a + relu(x-a) - relu(x-b)",
                               (nn.ReLU6, nn.Hardtanh), clamp_fns,
                               ("clamp", "clip", "clamp_min", "clamp_max")))
    register_handler(OpHandler("hardsigmoid", "neuron", _hardsigmoid, "two relu neurons",
                               (nn.Hardsigmoid,), (F.hardsigmoid,), ()))
    register_handler(OpHandler("hardswish", "neuron", _hardswish,
                               "two relu neurons and a product neuron",
                               (nn.Hardswish,), (F.hardswish,), ()))
    register_handler(OpHandler("elu", "neuron", _elu, "relu neuron and exp neuron",
                               (nn.ELU,), (F.elu,), ()))
    register_handler(OpHandler("mish", "neuron", _mish, "softplus, tanh and product neurons",
                               (nn.Mish,), (F.mish,), ()))
    register_handler(OpHandler("prelu", "neuron", _prelu, "relu neuron plus glue",
                               (nn.PReLU,), (F.prelu,), ()))
    register_handler(OpHandler("softplus", "neuron", _softplus, "softplus neuron of beta x",
                               (nn.Softplus,), (F.softplus,), ()))
    register_handler(OpHandler("glu", "neuron", _glu, "sigmoid and product neurons",
                               (nn.GLU,), (F.glu,), ()))
    register_handler(OpHandler("pow", "neuron", _pow, "square / product / x1/sqrt(x2) neurons",
                               (), (operator.pow, torch.pow, torch.square), ("pow", "square"),
                               check=_pow_check, applies=_is_pow_of_dynamic_base))
    register_handler(OpHandler("sqrt", "neuron", _sqrt, "x / sqrt(x) neurons",
                               (), (torch.sqrt,), ("sqrt",)))
    register_handler(OpHandler("rsqrt", "neuron", _rsqrt, "1 / sqrt(x) neurons",
                               (), (torch.rsqrt,), ("rsqrt",)))
    register_handler(OpHandler("minimum", "neuron", _minimum, "max neuron of the negations",
                               (), (torch.minimum,), ("minimum",), needs_dynamic=1))


_register()
