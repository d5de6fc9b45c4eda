"""Vectorised simulation of single neurons over a grid of inputs (the teaching API)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .codec import FloatEncoder
from .config import IFDynamics, SignGDDynamics
from .neurons import IFNeuron, NeuronState, SignGDNeuron
from .schedules import Schedule, check_steps
from .targets import Target, get_target


@dataclass
class Trajectory:
    """Per-step record of a neuron population driven by constant inputs.

    Shapes: T steps over inputs of shape S (the broadcast shape for two-input targets).

    Attributes:
        x_hat: (T, *S) input estimate of the (first) input after each step.
        x_hat_inputs: one (T, *S) tensor per input (two for binary targets).
        v: (T, *S) output estimate (membrane) after each step; the firing rate for IF neurons.
        spikes: (T, *S) spikes, 0.0 or 1.0.
        error: (T, *S) signed error v - target_value.
        target_value: (*S) exact target g(x).
        etas: (T,) the step sizes used.
        target: name of the target.
    """

    x_hat: torch.Tensor
    x_hat_inputs: tuple[torch.Tensor, ...]
    v: torch.Tensor
    spikes: torch.Tensor
    error: torch.Tensor
    target_value: torch.Tensor
    etas: torch.Tensor
    target: str

    @property
    def T(self) -> int:
        """Number of simulated steps."""
        return self.v.shape[0]

    def max_error(self) -> torch.Tensor:
        """(T,) max over inputs of |v_t - g(x)|."""
        return self.error.abs().flatten(1).amax(1)

    def mean_error(self) -> torch.Tensor:
        """(T,) mean over inputs of |v_t - g(x)|."""
        return self.error.abs().flatten(1).mean(1)


def _as_inputs(x: torch.Tensor | tuple[torch.Tensor, ...], arity: int, name: str
               ) -> tuple[torch.Tensor, ...]:
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if len(xs) != arity:
        raise ValueError(
            f"target {name!r} takes {arity} input(s) but {len(xs)} were given; "
            + ("pass a tuple (x1, x2)" if arity == 2 else "pass a single tensor")
        )
    out = []
    for i, xi in enumerate(xs):
        if not isinstance(xi, torch.Tensor):
            xi = torch.as_tensor(xi)
        if not xi.is_floating_point():
            xi = xi.to(torch.get_default_dtype())
        if not torch.isfinite(xi).all():
            raise ValueError(f"input {i} of target {name!r} contains NaN or Inf; pass finite values")
        out.append(xi)
    if arity == 2:
        if out[0].dtype != out[1].dtype or out[0].device != out[1].device:
            raise ValueError("both inputs must share dtype and device; convert one with .to(other)")
        shape = torch.broadcast_shapes(out[0].shape, out[1].shape)
        out = [xi.expand(shape) for xi in out]
    return tuple(out)


class _Recorder:
    def __init__(self) -> None:
        self.x_hat: list[tuple[torch.Tensor, ...]] = []
        self.v: list[torch.Tensor] = []
        self.s: list[torch.Tensor] = []

    def __call__(self, t: int, x_hat: tuple[torch.Tensor, ...], v: torch.Tensor,
                 s: torch.Tensor) -> None:
        self.x_hat.append(x_hat)
        self.v.append(v)
        self.s.append(s)

    def trajectory(self, target_value: torch.Tensor, etas: torch.Tensor, name: str) -> Trajectory:
        v = torch.stack(self.v)
        inputs = tuple(torch.stack(k) for k in zip(*self.x_hat))
        return Trajectory(inputs[0], inputs, v, torch.stack(self.s), v - target_value,
                          target_value, etas, name)


def simulate_neuron(target: str | Target, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                    T: int, dynamics: SignGDDynamics | None = None, encoding: str = "direct",
                    **target_params: float) -> Trajectory:
    """Simulate one signGD neuron per element of ``x`` for ``T`` steps.

    Args:
        target: a name from :func:`list_targets` or a :class:`Target`.
        x: the input current, a tensor of any shape (a tuple of two for two-input targets).
        T: number of time-steps (>= 1).
        dynamics: step sizes and tie rule (default: the paper's lr0=0.15, gamma=0.95).
        encoding: ``direct`` presents x as the input current with the correction of
            docs/theory.md, section 3, so x_hat_t = x at every step; ``float`` passes x through
            the paper's float encoder first, so x_hat_t = f_t = x (1 - prod(1 - eta)).
        target_params: parameters of parameterised targets, e.g. ``slope=0.2`` for leaky_relu.

    Returns:
        A :class:`Trajectory` with tensors of shape (T, *x.shape).
    """
    dyn = dynamics if dynamics is not None else SignGDDynamics()
    if not isinstance(dyn, SignGDDynamics):
        raise TypeError(f"dynamics must be a SignGDDynamics, got {type(dyn).__name__}")
    T = check_steps(T)
    tgt = dyn.apply_tie_rule(get_target(target, **target_params))
    xs = _as_inputs(x, tgt.arity, tgt.name)
    etas = dyn.etas(T, xs[0].device, xs[0].dtype)
    neuron = SignGDNeuron(tgt)
    rec = _Recorder()
    if encoding == "direct":
        state = neuron.init_state(xs, xs[0].shape)
        neuron.run(state, (None,) * len(xs), etas, observer=rec)
    elif encoding == "float":
        state = neuron.init_state(tuple(torch.zeros_like(xi) for xi in xs), xs[0].shape)
        drives = tuple(2.0 * FloatEncoder(xi).emit(etas) - 1.0 for xi in xs)
        neuron.run(state, drives, etas, observer=rec)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; use 'direct' or 'float'")
    return rec.trajectory(tgt.fn(*xs), etas, tgt.name)


def simulate_if_neuron(x: torch.Tensor, T: int, schedule: str | Schedule = "inverse",
                       tau: float = 8.0) -> Trajectory:
    """Simulate one IF neuron per element of ``x`` (presented directly as the current).

    ``schedule='inverse'`` gives rate coding (eta_t = 1/(t+1)), ``'constant'`` the leaky / EMA
    neuron with eta_t = 1/tau; a :class:`Schedule` object allows any other. The trajectory's ``v``
    is the firing rate and ``target_value`` is clip(x, 0, 1), the minimiser of
    L(y; x) = ReLU(x - y) + y^2/2. The input estimate starts at A(0) = 0.
    """
    T = check_steps(T)
    (xt,) = _as_inputs(x, 1, "if")
    if isinstance(schedule, Schedule):
        sched = schedule
    else:
        sched = IFDynamics(schedule, tau).as_schedule()
    etas = sched.etas(T, xt.device, xt.dtype)
    neuron = IFNeuron()
    rec = _Recorder()
    state: NeuronState = neuron.init_state(torch.zeros_like(xt))
    neuron.run(state, xt.unsqueeze(0).expand(T, *xt.shape), etas, observer=rec)
    return rec.trajectory(xt.clamp(0.0, 1.0), etas, "if")
