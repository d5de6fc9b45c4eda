"""Input encoders and output decoders of a converted network (docs/theory.md,
sections 1, 4 and 6).

``FloatEncoder`` (paper)::

    f_0 = 0
    e_t = (1 + (f_{t-1} - x)) / 2               # value emitted at step t
    f_t = f_{t-1} - eta_t * (f_{t-1} - x)

so the first layer's input estimate is A(f_t) with f_t = x * (1 - prod_{k<=t}(1 - eta_k)):
a gain that tops out at 0.956 for the paper schedule.

``DirectEncoder`` (IF mode): e_t = x at every step.

``DirectSignGDEncoder`` (extended dynamics): e_1 = (1 - x / eta_1) / 2, then e_t = 1/2, so the
first layer's input estimate is A(x) from the first step (no 0.956 gain floor).

``SignGDDecoder`` (paper): y_0 = bias_out, y_t = y_{t-1} - eta_t (2 I_t - offset_out).
``RateDecoder`` (IF mode): y_t = (I_1 + ... + I_t) / (t + 1).
"""
from __future__ import annotations

import torch

from . import kernels


class FloatEncoder:
    """The reference's "float" input encoder (see module docstring for its equations)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.f = torch.zeros(x.shape, dtype=x.dtype, device=x.device)

    def emit(self, etas: torch.Tensor) -> torch.Tensor:
        """Emitted values for the next ``len(etas)`` steps, shape (T, *x.shape) (one fused
        kernel pass on CPU, else torch ops; the same numbers)."""
        if kernels.usable(self.x, self.f) and self.x.dim() > 0:
            return kernels.float_encoder(self.f, self.x, etas)
        out = []
        for k in range(etas.shape[0]):
            gradient = self.f - self.x  # rounded once, used twice (the reference's order)
            out.append(0.5 * (1.0 + gradient))
            self.f = self.f - etas[k] * gradient
        return torch.stack(out)


class DirectEncoder:
    """Presents the input itself as the current at every step (IF mode)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def emit(self, etas: torch.Tensor) -> torch.Tensor:
        """``x`` repeated for ``len(etas)`` steps, shape (T, *x.shape)."""
        return self.x.unsqueeze(0).expand(etas.shape[0], *self.x.shape)


class DirectSignGDEncoder:
    """Emits e_1 = (1 - x / eta_1) / 2 and then 1/2: the upstream estimate -sum eta_k (2 e_k - 1)
    equals x after the first step and stays there."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.started = False

    def emit(self, etas: torch.Tensor) -> torch.Tensor:
        """Emitted values for the next ``len(etas)`` steps, shape (T, *x.shape)."""
        out = torch.full((etas.shape[0], *self.x.shape), 0.5, dtype=self.x.dtype,
                         device=self.x.device)
        if not self.started:
            out[0] = (1.0 - self.x / etas[0]) / 2.0
            self.started = True
        return out


class SignGDDecoder:
    """Output estimate y_t = y_{t-1} - eta_t (2 I_t - offset), y_0 = bias."""

    def __init__(self, bias: torch.Tensor, offset: torch.Tensor) -> None:
        self.y = bias.clone()
        self.offset = offset

    def decode(self, currents: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
        """Consume (T, *shape) output currents; return the estimate after each step (one fused
        kernel pass on CPU, else torch ops; the same numbers)."""
        if kernels.usable(self.y, currents) and self.y.dim() > 0 and \
                self.offset.numel() * self.y.shape[0] == self.y.numel():
            self.y = self.y.contiguous()
            return kernels.estimates(self.y, currents, self.offset, etas)
        out = []
        for k in range(etas.shape[0]):
            self.y = self.y - etas[k] * (2.0 * currents[k] - self.offset)
            out.append(self.y)
        return torch.stack(out)


class RateDecoder:
    """Output estimate y_t = (I_1 + ... + I_t) / (t + 1) (the reference's IF-mode readout)."""

    def __init__(self, like: torch.Tensor) -> None:
        self.total = torch.zeros_like(like)
        self.t = 0

    def decode(self, currents: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
        """Consume (T, *shape) output currents; return the estimate after each step."""
        out = []
        for k in range(currents.shape[0]):
            self.total = self.total + currents[k]
            self.t += 1
            out.append(self.total / (self.t + 1))
        return torch.stack(out)
