"""Step-size schedules eta_t, t = 1..T, computed for any horizon T.

Every schedule is evaluated from its closed form on the caller's device and dtype (no fixed
table, so there is no cap on T). The index convention follows docs/theory.md: ``etas[0]`` is eta_1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("constant", "inverse", "inverse_sqrt", "polynomial", "exponential")


def check_steps(T: int) -> int:
    """Return ``T`` as an int after checking it is a positive whole number of time-steps."""
    if isinstance(T, bool) or not isinstance(T, (int,)) and not (
        isinstance(T, float) and T.is_integer()
    ):
        raise ValueError(f"T must be a positive integer number of time-steps, got {T!r}")
    if int(T) <= 0:
        raise ValueError(f"T must be a positive integer number of time-steps, got {T!r}; use T >= 1")
    return int(T)


@dataclass(frozen=True)
class Schedule:
    """A step-size schedule eta_t for t = 1, 2, ...

    kinds:
        ``constant``      eta_t = lr0                  (leaky IF / EMA coding when lr0 = 1/tau)
        ``inverse``       eta_t = 1 / (t + 1)          (IF neuron with rate coding)
        ``inverse_sqrt``  eta_t = lr0 / sqrt(t)
        ``polynomial``    eta_t = lr0 / t**power
        ``exponential``   eta_t = lr0 * gamma**(t - 1) (signGD neuron; paper: lr0=0.15, gamma=0.95)
    """

    kind: str = "exponential"
    lr0: float = 0.15
    gamma: float = 0.95
    power: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}"
            )
        if not (math.isfinite(self.lr0) and self.lr0 > 0):
            raise ValueError(f"lr0 must be a positive finite number, got {self.lr0!r}")
        if self.kind == "exponential" and not (0.0 < self.gamma <= 1.0):
            raise ValueError(f"gamma must lie in (0, 1] for the exponential schedule, got {self.gamma!r}")
        if self.kind == "polynomial" and not self.power > 0:
            raise ValueError(f"power must be positive for the polynomial schedule, got {self.power!r}")

    def etas(self, T: int, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Step sizes eta_1..eta_T as a tensor of shape (T,) (computed in float64, then cast)."""
        T = check_steps(T)
        t = torch.arange(1, T + 1, dtype=torch.float64, device=device)
        if self.kind == "constant":
            eta = torch.full_like(t, self.lr0)
        elif self.kind == "inverse":
            eta = 1.0 / (t + 1.0)
        elif self.kind == "inverse_sqrt":
            eta = self.lr0 / torch.sqrt(t)
        elif self.kind == "polynomial":
            eta = self.lr0 / t**self.power
        else:
            eta = self.lr0 * self.gamma ** (t - 1.0)
        return eta.to(dtype)

    def total(self, T: int | None = None) -> float:
        """sum_{t<=T} eta_t: the farthest a signGD output estimate can move from 0.

        With ``T=None`` the infinite sum: lr0 / (1 - gamma) for the exponential schedule and
        ``inf`` for the non-summable ones.
        """
        if T is None:
            if self.kind == "exponential" and self.gamma < 1.0:
                return self.lr0 / (1.0 - self.gamma)
            return math.inf
        return float(self.etas(T, dtype=torch.float64).sum())
