"""Target nonlinearities g of signGD neurons, with the reference's spike (tie) rules.

A signGD neuron fires when its output estimate v is at or above g(x_hat) ("my estimate is too
high"). Whether an exact tie v == g fires differs per op in the reference (docs/theory.md,
section 2); each :class:`Target` records that rule. Targets live in one registry: :func:`list_targets`,
:func:`get_target`, :func:`register_target`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

TargetFn = Callable[..., torch.Tensor]
SpikeRule = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Target:
    """A target nonlinearity g for a signGD neuron.

    Attributes:
        name: registry name (parameters appended, e.g. ``leaky_relu(slope=0.2)``).
        fn: the exact function g(x1[, x2]) on tensors.
        arity: number of inputs (1 or 2).
        tie_fires: spike rule ``v >= g`` when True, ``v > g`` when False.
        rule: optional custom spike rule ``rule(v, *x_hat) -> bool tensor`` used instead of
            comparing with ``fn`` (the reference's x1/sqrt(x2) neuron compares sqrt(x2) * v > x1).
        description: one line for tables and notebooks.
        param: the target's numeric parameter, if any (LeakyReLU's slope).
        scale: set on a rescaled target h(z) = g(scale * z) / scale (see :meth:`rescaled`).
        kernel: name of the compiled CPU kernel that computes this target
            (:mod:`signgd_lab.dynamics.kernels`); None for user targets (torch path).
    """

    name: str
    fn: TargetFn
    arity: int = 1
    tie_fires: bool = True
    rule: SpikeRule | None = field(default=None, compare=False)
    description: str = ""
    param: float = 0.0
    scale: torch.Tensor | None = field(default=None, compare=False, repr=False)
    kernel: str | None = field(default=None, compare=False, repr=False)

    def rescaled(self, scale: torch.Tensor) -> "Target":
        """The target h(z) = g(scale * z) / scale (a one-input target seen on z = x / scale:
        h(x / scale) * scale = g(x)); named ``<name>[rescaled]``."""
        if self.arity != 1:
            raise ValueError(f"only one-input targets can be rescaled, not {self.name!r}")
        return dataclasses.replace(self, name=f"{self.name}[rescaled]", rule=None, scale=scale,
                                   fn=functools.partial(_rescaled, self.fn, scale))

    def __call__(self, *x: torch.Tensor) -> torch.Tensor:
        return self.fn(*x)

    def fires(self, v: torch.Tensor, *x_hat: torch.Tensor) -> torch.Tensor:
        """Boolean spike decision s = 1[v >= g(x_hat)] (or ``>`` / the custom rule)."""
        if self.rule is not None:
            return self.rule(v, *x_hat)
        g = self.fn(*x_hat)
        return v >= g if self.tie_fires else v > g


# Target functions are module-level (or functools.partial of them) so that targets, and the
# converted networks holding them, can be pickled (torch.save(snn)).
def _rescaled(g: TargetFn, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return g(scale * z) / scale


def _gelu_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) rounded once, as the CPU kernels and CUDA compute it: torch's CPU sqrt is not
    (on an AVX2 build, 1 ulp off for about 20% of float32 and 1% of float64 inputs). On CPU,
    narrower floats go through float64; float64, and every dtype on other devices, stay
    torch's."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.sqrt(x.double()).to(x.dtype)
    return torch.sqrt(x)


def _rsqrt_div(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return x1 / _sqrt(x2)


def _leaky_relu(slope: float, x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, slope * x)


def _leaky(slope: float) -> TargetFn:
    return functools.partial(_leaky_relu, slope)


def _rsqrt_div_rule(v: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return _sqrt(x2) * v > x1


_FACTORIES: dict[str, Callable[..., Target]] = {}


def _register_factory(name: str, factory: Callable[..., Target]) -> None:
    _FACTORIES[name] = factory


def _fixed(target: Target) -> Callable[..., Target]:
    def factory(**params: float) -> Target:
        if params:
            raise TypeError(f"target {target.name!r} takes no parameters, got {sorted(params)}")
        return target

    return factory


def _leaky_factory(slope: float = 0.1) -> Target:
    if not math.isfinite(slope):
        raise ValueError(f"leaky_relu slope must be finite, got {slope!r}")
    name = "leaky_relu" if slope == 0.1 else f"leaky_relu(slope={slope:g})"
    return Target(name, _leaky(slope), 1, tie_fires=False,
                  description=f"x if x >= 0 else {slope:g} x (reference: slope 0.1)", param=slope,
                  kernel="leaky_relu")


_BUILTIN = [
    Target("relu", torch.relu, 1, True, description="max(x, 0)"),
    Target("gelu", _gelu_sigmoid, 1, False, description="x sigmoid(1.702 x) (paper's GELU)"),
    Target("gelu_erf", F.gelu, 1, False, description="x Phi(x), exact erf GELU"),
    Target("gelu_tanh", _gelu_tanh, 1, False,
           description="tanh-approximated GELU"),
    Target("abs", torch.abs, 1, False, description="|x|"),
    Target("square", torch.square, 1, True, description="x^2 (LayerNorm variance)"),
    Target("exp", torch.exp, 1, True, description="e^x (softmax numerator)"),
    Target("silu", F.silu, 1, False, description="x sigmoid(x)"),
    Target("sigmoid", torch.sigmoid, 1, False, description="1 / (1 + e^-x)"),
    Target("tanh", torch.tanh, 1, False, description="tanh x"),
    Target("softplus", F.softplus, 1, False, description="log(1 + e^x)"),
    Target("log", torch.log, 1, True, description="log x (log-softmax's normaliser, x >= 1)"),
    Target("max", torch.maximum, 2, False, description="max(x1, x2) (max-pooling)"),
    Target("div", torch.div, 2, False, description="x1 / x2 (softmax normalisation)"),
    Target("rsqrt_div", _rsqrt_div, 2, False, rule=_rsqrt_div_rule,
           description="x1 / sqrt(x2) (LayerNorm normalisation)"),
    Target("mul", torch.mul, 2, True, description="x1 x2 (matmul product neurons)"),
]
_BUILTIN = [dataclasses.replace(t, kernel=t.name) for t in _BUILTIN]
for _t in _BUILTIN:
    _register_factory(_t.name, _fixed(_t))
_register_factory("leaky_relu", _leaky_factory)


def list_targets() -> list[str]:
    """Names of every registered target, built-in and user-registered, sorted."""
    return sorted(_FACTORIES)


def get_target(target: str | Target, **params: float) -> Target:
    """Look up a target by name (``params`` go to parameterised targets such as
    ``leaky_relu(slope=...)``); a :class:`Target` passes through unchanged."""
    if isinstance(target, Target):
        if params:
            raise TypeError("parameters can only be given with a target name, not a Target object")
        return target
    if not isinstance(target, str) or target not in _FACTORIES:
        raise ValueError(
            f"unknown target {target!r}; known targets: {', '.join(list_targets())}. "
            "Add your own with signgd_lab.register_target(name, fn, arity=1)."
        )
    return _FACTORIES[target](**params)


def register_target(name: str, fn: TargetFn, arity: int = 1, tie_fires: bool = True,
                    description: str = "", overwrite: bool = False) -> Target:
    """Register a user target ``fn`` (a torch function of ``arity`` tensors) under ``name``.

    The neuron then fires when ``v >= fn(x_hat)`` (``v > fn(x_hat)`` with ``tie_fires=False``).
    Returns the new :class:`Target`. Re-registering a name needs ``overwrite=True``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"target name must be an identifier-like string, got {name!r}")
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"target {name!r} already exists; pass overwrite=True to replace it")
    if not callable(fn):
        raise TypeError(f"fn must be callable on tensors, got {type(fn).__name__}")
    if arity not in (1, 2):
        raise ValueError(f"arity must be 1 or 2, got {arity!r}")
    probe = fn(*([torch.linspace(0.1, 1.0, 4)] * arity))
    if not isinstance(probe, torch.Tensor) or probe.shape != (4,):
        raise TypeError(f"fn must map {arity} tensor(s) of shape (4,) to one of shape (4,)")
    target = Target(name, fn, arity, tie_fires, description=description or name)
    _register_factory(name, _fixed(target))
    return target


def unregister_target(name: str) -> None:
    """Remove a user-registered target (built-ins cannot be removed)."""
    if name in {t.name for t in _BUILTIN} or name == "leaky_relu":
        raise ValueError(f"{name!r} is a built-in target and cannot be removed")
    _FACTORIES.pop(name, None)
