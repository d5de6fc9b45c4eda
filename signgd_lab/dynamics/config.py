"""Dataclass configs of the neuron dynamics."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .codec import (DirectEncoder, DirectSignGDEncoder, FloatEncoder, RateDecoder, SignGDDecoder)
from .neurons import Drive, IFNeuron, NeuronState, Observer, SignGDNeuron
from .schedules import Schedule
from .targets import Target

Encoder = FloatEncoder | DirectSignGDEncoder | DirectEncoder
Decoder = SignGDDecoder | RateDecoder

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

    def can_run(self, target: Target) -> bool:
        """signGD neurons run every target."""
        return True

    def run(self, target: Target, state: NeuronState, drives: tuple[Drive, ...],
            etas: torch.Tensor, observer: Observer | None = None,
            out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Advance a population of :class:`SignGDNeuron` with ``target`` (tie rule applied)
        ``len(etas)`` steps; returns its spikes (T, B, ...) times ``out_scale``."""
        return SignGDNeuron(self.apply_tie_rule(target)).run(state, drives, etas, observer,
                                                             out_scale)

    def codec(self, x: torch.Tensor, out_bias: torch.Tensor, out_offset: torch.Tensor
              ) -> tuple[Encoder, Decoder]:
        """The network's input encoder for ``x`` and its output decoder (y_0 = ``out_bias``)."""
        encoder = FloatEncoder(x) if self.encoder == "float" else DirectSignGDEncoder(x)
        return encoder, SignGDDecoder(out_bias, out_offset)


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

    def can_run(self, target: Target) -> bool:
        """IF neurons run ReLU only (the subgradient method's fixed point is clip(x, 0, 1))."""
        return target.name == "relu"

    def run(self, target: Target, state: NeuronState, drives: tuple[Drive, ...],
            etas: torch.Tensor, observer: Observer | None = None,
            out_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Advance a population of :class:`IFNeuron` (``target`` is ReLU: the conversion admits
        nothing else) ``len(etas)`` steps on the input current of ``drives[0]``; returns its
        spikes (T, B, ...) times ``out_scale``."""
        spikes = IFNeuron().run(state, drives[0].input(), etas, observer)
        return spikes if out_scale is None else spikes * out_scale

    def codec(self, x: torch.Tensor, out_bias: torch.Tensor, out_offset: torch.Tensor
              ) -> tuple[Encoder, Decoder]:
        """The direct encoder (x at every step) and the rate decoder (y_0 = ``out_bias``)."""
        return DirectEncoder(x), RateDecoder(out_bias)
