"""Neuron recurrences: the signGD neuron and the integrate-and-fire (IF) neuron.

Both run over a block of time-steps at once (``drive``/``current`` of shape (T, *shape)), keeping
their state between blocks, so a simulation can be one step at a time or many steps per call
with identical arithmetic. An optional ``observer(t, x_hat, v, s)`` sees every step (used by
trajectories and probes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import kernels
from .compiled_step import fused_step, membrane_step
from .targets import Target

Observer = Callable[[int, tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor], None]


@dataclass
class Drive:
    """Input of one arm of a population over a block: d_k = 2 I_k - offset, kept as its parts
    so fused kernels can compute it on the fly. current (T, B, *S), offset broadcastable."""

    current: torch.Tensor
    offset: torch.Tensor
    divisor: torch.Tensor | None = None  # I = (current - shift) / divisor: a neuron module's
    shift: torch.Tensor | None = None  # input rescaling, done inside the kernel where one runs

    def input(self) -> torch.Tensor:
        """The input current I, (T, B, *S)."""
        current = self.current if self.shift is None else torch.sub(self.current, self.shift)
        return current if self.divisor is None else torch.div(current, self.divisor)

    def tensor(self) -> torch.Tensor:
        """2 I - offset, (T, B, *S)."""
        return 2.0 * self.input() - self.offset


@dataclass
class NeuronState:
    """State of a population of neurons: input estimate(s) ``x_hat`` and output estimate ``v``;
    ``t`` counts the steps taken so far (the next step is t + 1) and ``fired`` the spikes the
    whole population (every sample) has emitted so far, when they are counted (set it to 0 to
    start counting; None: not counted, which keeps the fused kernels at full speed). ``kernel``
    is the population kernel prepared on the first block that ran one, kept for the next."""

    x_hat: tuple[torch.Tensor, ...]
    v: torch.Tensor
    t: int = 0
    fired: float | torch.Tensor | None = None
    kernel: kernels.PopulationKernel | None = None

    def count(self, spikes: torch.Tensor | int) -> None:
        """Add ``spikes`` (a tensor of spikes or spike counts, or their total) to ``fired``
        when the population counts its spikes."""
        if self.fired is not None:
            self.fired += spikes if isinstance(spikes, int) else spikes.sum(dtype=torch.float64)


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

    def run(self, state: NeuronState, drives: tuple[torch.Tensor | Drive | None, ...],
            etas: torch.Tensor, observer: Observer | None = None,
            out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Advance ``len(etas)`` steps; ``drives[i]`` gives 2 I_i - offset_i for each step, as a
        (T, ...) tensor or a :class:`Drive` (None: constant input estimate).

        Returns the spikes of every step, (T, *v.shape), in the state's dtype, multiplied by
        ``out_scale`` if given (a folded ``* m`` rescaling). The arithmetic
        does not depend on the block length: input estimates are updated one step at a time,
        only independent work (eta_k d_k, g(x_hat_k)) is batched, and the membrane recursion
        runs in a fused kernel on CPU (:mod:`.kernels`) or as torch ops: bit for bit alike for
        targets of exact IEEE arithmetic, up to last-bit ties for the exp-based ones.
        """
        steps = etas.shape[0]
        target = self.target
        kernel = None if observer is not None else _population_kernel(target, drives, state,
                                                                       out_scale)
        if kernel is not None:
            spikes, fired = kernel(tuple(d.current for d in drives), state.x_hat, state.v, etas)
            state.t += steps
            state.count(fired)
            return spikes
        v = state.v
        seqs = [_estimates(x, d, etas) for x, d in zip(state.x_hat, drives)]  # (T, *S_i) / None
        xs = [x.unsqueeze(0) if seq is None else seq for x, seq in zip(state.x_hat, seqs)]
        if observer is None and target.rule is None:
            g = target.fn(*xs).expand(steps, *v.shape)  # (T, *v.shape)
            if kernels.usable(v, g):
                v = v.contiguous()
                spikes = kernels.sign_steps(v, g, etas, target.tie_fires)
            else:
                step = fused_step if v.is_cuda else membrane_step
                out = []
                for k in range(steps):
                    v, s = step(v, g[k], etas[k], target.tie_fires)
                    out.append(s)
                spikes = torch.stack(out)
        else:
            out = []
            for k in range(steps):
                x_k = tuple(x[0] if seq is None else x[k] for x, seq in zip(xs, seqs))
                s = target.fires(v, *x_k).to(v.dtype)
                v = v - etas[k] * (2.0 * s - 1.0)
                if observer is not None:
                    observer(state.t + k + 1, x_k, v, s)
                out.append(s)
            spikes = torch.stack(out)
        state.x_hat = tuple(x if seq is None else seq[-1] for x, seq in zip(state.x_hat, seqs))
        state.v = v
        state.t += steps
        state.count(spikes)
        return spikes if out_scale is None else spikes * out_scale


def _population_kernel(target: Target, drives: tuple, state: NeuronState,
                       out_scale: torch.Tensor | None) -> kernels.PopulationKernel | None:
    """The :class:`~.kernels.PopulationKernel` that runs this block (every input has a
    :class:`Drive` on a supported layout), else None: the state's own when it still fits (the
    same offsets, scales and state layout as on the block that prepared it), else a new one,
    kept in the state."""
    if not all(isinstance(d, Drive) for d in drives) or len(drives) != len(state.x_hat):
        return None
    lead = drives[0]
    offsets = tuple(d.offset for d in drives)
    counting = state.fired is not None
    kernel = state.kernel
    same_target = kernel is not None and \
        (target.kernel, target.param, target.tie_fires) == kernel.target
    if same_target and \
            all(d.divisor is None and d.shift is None for d in drives[1:]) and \
            kernel.fits(offsets, state.x_hat, state.v, target.scale, lead.shift, lead.divisor,
                        out_scale, counting) and \
            all(x.is_contiguous() for x in (*state.x_hat, state.v)) and \
            kernels.usable(*(d.current for d in drives)):
        return kernel
    layout = _kernel_layout(target, drives, state, out_scale)
    if layout is None:
        return None
    state.kernel = kernels.PopulationKernel(
        target.kernel, target.param, target.tie_fires, offsets, state.x_hat, state.v,
        target.scale, lead.shift, lead.divisor, out_scale, layout, counting)
    return state.kernel


def _kernel_layout(target: Target, drives: tuple, state: NeuronState,
                   out_scale: torch.Tensor | None) -> str | None:
    """The :func:`~.kernels.population_layout` a population kernel runs this block with (every
    input has a :class:`Drive` on a supported layout), else None. Makes the state contiguous
    when a kernel runs (it updates the state in place)."""
    if any(d.divisor is not None or d.shift is not None for d in drives[1:]) or \
            not kernels.per_neuron(state.v, drives[0].shift, drives[0].divisor, out_scale):
        return None
    if not kernels.usable(state.v, *state.x_hat, *(d.current for d in drives)):
        return None
    layout = kernels.population_layout(target.kernel, state.x_hat, state.v,
                                       tuple(d.offset for d in drives), target.scale)
    if layout is not None:
        state.x_hat = tuple(x.contiguous() for x in state.x_hat)
        state.v = state.v.contiguous()
    return layout


def _estimates(x_hat: torch.Tensor, drive: torch.Tensor | Drive | None, etas: torch.Tensor
               ) -> torch.Tensor | None:
    """Input estimates x_hat_k = x_hat_{k-1} - eta_k d_k of every step of a block, (T, *S)
    (None for a constant estimate): one fused kernel pass on CPU, else a torch loop, with the
    same arithmetic."""
    if drive is None:
        return None
    if isinstance(drive, Drive) and x_hat.numel() and kernels.usable(x_hat, drive.current):
        return kernels.estimates(x_hat.contiguous(), drive.input(), drive.offset, etas)
    d = drive.tensor() if isinstance(drive, Drive) else drive
    scaled = etas.view(-1, *([1] * (d.dim() - 1))) * d  # eta_k * d_k for every k at once
    seq = []
    for k in range(etas.shape[0]):
        x_hat = x_hat - scaled[k]
        seq.append(x_hat)
    return torch.stack(seq)


class ProductSumNeurons:
    """N*K*M signGD product neurons (target x1 x2, ties fire) whose spikes are summed over K:
    the spiking form of a matmul between two input-dependent tensors.

    Inputs a (..., N, K) and b (..., K, M) have one input estimate per entry; neuron (n, k, m)
    runs the signGD equations of :class:`SignGDNeuron` with g = a_hat[n, k] * b_hat[k, m], and
    the population emits sum_k s[n, k, m] (..., N, M). Membranes (..., N, K, M) are updated in
    place one block of rows at a time, so no other tensor of that size is ever held.
    """

    def __init__(self, target: Target, chunk_elements: int = 2**20) -> None:
        self.target = target
        self.chunk_elements = chunk_elements

    def run(self, state: NeuronState, drives: tuple[torch.Tensor | Drive, torch.Tensor | Drive],
            etas: torch.Tensor, observer: Observer | None = None) -> torch.Tensor:
        """Advance ``len(etas)`` steps; returns spike counts (T, ..., N, M) in the state dtype."""
        v = state.v  # (..., N, K, M), owned by the state: updated in place
        seq_a, seq_b = (_estimates(x, d, etas) for x, d in zip(state.x_hat, drives))
        state.x_hat = (seq_a[-1], seq_b[-1])
        if observer is None and kernels.usable(v, seq_a, seq_b) and v.is_contiguous():
            state.t += etas.shape[0]
            counts = kernels.product_steps(v, seq_a, seq_b, etas, self.target.tie_fires)
            state.count(counts)
            return counts
        n_rows, k_dim, m_dim = v.shape[-3:]
        per_row = max(1, v[..., :1, :, :].numel())
        rows = n_rows if observer is not None else max(1, min(n_rows, self.chunk_elements // per_row))
        counts = torch.empty(etas.shape[0], *v.shape[:-3], n_rows, m_dim, dtype=v.dtype, device=v.device)
        fire_full = None
        for k in range(etas.shape[0]):
            a, b = seq_a[k], seq_b[k]
            for r in range(0, n_rows, rows):
                g = a[..., r:r + rows, :, None] * b[..., None, :, :]  # (..., rows, K, M)
                v_rows = v[..., r:r + rows, :, :]
                fire = v_rows >= g if self.target.tie_fires else v_rows > g
                v_rows.sub_(etas[k] * (2.0 * fire.to(v.dtype) - 1.0))
                counts[k, ..., r:r + rows, :] = fire.sum(-2)
                fire_full = fire
            state.t += 1
            if observer is not None:
                observer(state.t, (a.unsqueeze(-1), b.unsqueeze(-3)), v, fire_full.to(v.dtype))
        state.count(counts)
        return counts


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
        spikes = torch.stack(out)
        state.count(spikes)
        return spikes
