"""Neuron recurrences: the signGD neuron and the integrate-and-fire (IF) neuron.

Both run over a block of time-steps at once (``drive``/``current`` of shape (T, *shape)), keeping
their state between blocks, so a simulation can be one step at a time or many steps per call
with identical arithmetic. An optional ``observer(t, x_hat, v, s)`` sees every step (used by
trajectories and probes); ``reduce`` folds each step's spikes before they are stored (product
neurons of a matmul sum theirs over K).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .targets import Target

Observer = Callable[[int, tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor], None]


@dataclass
class NeuronState:
    """State of a population of neurons: input estimate(s) ``x_hat`` and output estimate ``v``;
    ``t`` counts the steps taken so far (the next step is t + 1)."""

    x_hat: tuple[torch.Tensor, ...]
    v: torch.Tensor
    t: int = 0


class SignGDNeuron:
    """A population of sign-gradient-descent neurons with target nonlinearity g.

    Update equations (t = 1, 2, ...; eta_t from the schedule, paper: 0.15 * 0.95**(t-1))::

        x_hat_0 = bias                      v_0 = 0
        x_hat_t = x_hat_{t-1} - eta_t * d_t          # d_t = 2 I_t - offset (the "drive")
        s_t     = 1[ v_{t-1} >= g(x_hat_t) ]          # '>' where the target's tie does not fire
        v_t     = v_{t-1} - eta_t * (2 s_t - 1)

    v_t is a sign-gradient step on |v - g(x_hat_t)|, so it tracks g(x) with error of order eta_t,
    and |v_t| <= sum_k eta_k. Two-input targets keep one estimate per input.
    """

    def __init__(self, target: Target) -> None:
        self.target = target

    def init_state(self, bias: tuple[torch.Tensor, ...], shape: torch.Size) -> NeuronState:
        """State at t = 0: x_hat_i = bias_i, v = 0 with the broadcast ``shape``."""
        ref = bias[0]
        return NeuronState(tuple(b.clone() for b in bias),
                           torch.zeros(shape, dtype=ref.dtype, device=ref.device))

    def run(self, state: NeuronState, drives: tuple[torch.Tensor | None, ...], etas: torch.Tensor,
            observer: Observer | None = None,
            reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Advance ``len(etas)`` steps; ``drives[i][k]`` is 2 I_i - offset_i at step k (None: 0).

        Returns the spikes of every step stacked on dim 0 (after ``reduce`` if given).
        """
        x_hat = list(state.x_hat)
        v = state.v
        out = []
        for k in range(etas.shape[0]):
            eta = etas[k]
            for i, d in enumerate(drives):
                if d is not None:
                    x_hat[i] = x_hat[i] - eta * d[k]
            fire = self.target.fires(v, *x_hat)
            s = fire.to(v.dtype)
            v = v - eta * (2.0 * s - 1.0)
            state.t += 1
            if observer is not None:
                observer(state.t, tuple(x_hat), v, s)
            out.append(reduce(s) if reduce is not None else s)
        state.x_hat, state.v = tuple(x_hat), v
        return torch.stack(out)


class IFNeuron:
    """A population of integrate-and-fire neurons with rate coding: the subgradient method on
    L(y; x) = ReLU(x - y) + y^2 / 2, whose minimiser is clip(x, 0, 1).

    Update equations (t = 1, 2, ...; eta_t = 1 / (t + 1) for rate coding, 1 / tau for EMA)::

        x_hat_0 = A(0)                    v_0 = 0
        x_hat_t = x_hat_{t-1} - eta_t * (x_hat_{t-1} - I_t)     # running average of the current
        s_t     = H(x_hat_t - v_{t-1})                           # strict Heaviside
        v_t     = v_{t-1} - eta_t * (v_{t-1} - s_t)              # = firing rate

    With eta_t = 1/(t+1), v_t = (s_1 + ... + s_t) / (t + 1).
    """

    def init_state(self, bias: torch.Tensor, shape: torch.Size | None = None) -> NeuronState:
        """State at t = 0: x_hat = A(0) = ``bias``, v = 0."""
        shape = bias.shape if shape is None else shape
        return NeuronState((bias.clone(),), torch.zeros(shape, dtype=bias.dtype, device=bias.device))

    def run(self, state: NeuronState, currents: torch.Tensor, etas: torch.Tensor,
            observer: Observer | None = None) -> torch.Tensor:
        """Advance ``len(etas)`` steps with input currents ``currents[k]``; returns the spikes."""
        (x_hat,), v = state.x_hat, state.v
        out = []
        for k in range(etas.shape[0]):
            eta = etas[k]
            x_hat = x_hat - eta * (x_hat - currents[k])
            s = (x_hat > v).to(v.dtype)
            v = v - eta * (v - s)
            state.t += 1
            if observer is not None:
                observer(state.t, (x_hat,), v, s)
            out.append(s)
        state.x_hat, state.v = (x_hat,), v
        return torch.stack(out)
