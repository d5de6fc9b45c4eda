"""Dataclass configs of the neuron dynamics."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .schedules import Schedule
from .targets import Target

TIE_RULES = ("reference", "fire", "rest")
ENCODERS = ("float", "direct")


@dataclass(frozen=True)
class SignGDDynamics:
    """Configuration of signGD neurons and of the codec around them.

    Attributes:
        lr0, gamma: step sizes eta_t = lr0 * gamma**(t-1) (paper: 0.15, 0.95).
        schedule: any :data:`~signgd_lab.dynamics.schedules.SCHEDULE_KINDS` (paper: exponential).
        power: exponent of the polynomial schedule.
        tie_rule: ``reference`` (per-op rules, docs/theory.md, section 2), ``fire`` (every
            tie fires, ``>=``) or ``rest`` (no tie fires, ``>``).
        encoder: network input codec, ``float`` (paper) or ``direct`` (input estimate = x at once).
    """

    lr0: float = 0.15
    gamma: float = 0.95
    schedule: str = "exponential"
    power: float = 0.5
    tie_rule: str = "reference"
    encoder: str = "float"

    def __post_init__(self) -> None:
        self.as_schedule()  # validates lr0 / gamma / schedule
        if self.tie_rule not in TIE_RULES:
            raise ValueError(f"unknown tie_rule {self.tie_rule!r}; choose one of {TIE_RULES}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of {ENCODERS}")

    kind = "signgd"

    def as_schedule(self) -> Schedule:
        """The step-size :class:`Schedule` these dynamics use."""
        return Schedule(self.schedule, self.lr0, self.gamma, self.power)

    def etas(self, T: int, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """eta_1..eta_T, shape (T,)."""
        return self.as_schedule().etas(T, device, dtype)

    @property
    def output_bound(self) -> float:
        """sum of all eta_t = lr0 / (1 - gamma): no output estimate can leave [-bound, bound]."""
        return self.as_schedule().total()

    def apply_tie_rule(self, target: Target) -> Target:
        """The target with its tie behaviour set by ``tie_rule`` (custom rules stay as they are)."""
        if self.tie_rule == "reference" or target.rule is not None:
            return target
        return dataclasses.replace(target, tie_fires=self.tie_rule == "fire")


@dataclass(frozen=True)
class IFDynamics:
    """Configuration of IF (subgradient) neurons: rate coding with eta_t = 1/(t+1)
    (``schedule='inverse'``) or EMA coding with eta_t = 1/tau (``schedule='constant'``)."""

    schedule: str = "inverse"
    tau: float = 8.0

    kind = "if"

    def __post_init__(self) -> None:
        if self.schedule not in ("inverse", "constant"):
            raise ValueError(f"IF schedule must be 'inverse' or 'constant', got {self.schedule!r}")
        if not self.tau >= 1.0:
            raise ValueError(f"tau must be >= 1 (eta = 1/tau <= 1), got {self.tau!r}")

    def as_schedule(self) -> Schedule:
        """The step-size :class:`Schedule` these dynamics use."""
        return Schedule(self.schedule, lr0=1.0 / self.tau)

    def etas(self, T: int, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """eta_1..eta_T, shape (T,)."""
        return self.as_schedule().etas(T, device, dtype)
