"""The computations behind the notebooks and the report (figures live in :mod:`signgd_lab.viz`)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .conversion import SpikingNetwork, convert
from .dynamics import Schedule, SignGDDynamics, get_target, simulate_if_neuron, simulate_neuron
from .probes import spike_stats_over_T


def relu1_loss(y: torch.Tensor, x: torch.Tensor | float) -> torch.Tensor:
    """L(y; x) = ReLU(x - y) + y^2 / 2, minimised at clip(x, 0, 1) (docs/theory.md, section 1)."""
    return torch.relu(torch.as_tensor(x) - y) + y**2 / 2


def if_schedule(kind: str, tau: float = 8.0) -> Schedule:
    """The IF step-size schedule ``kind`` of notebook 01 (one of ``Schedule``'s kinds):
    inverse 1/(t+1), constant 1/tau, inverse_sqrt 1/sqrt(t), polynomial 1/t^0.75, exponential
    0.5*0.97^(t-1)."""
    return {
        "inverse": Schedule("inverse"),
        "constant": Schedule("constant", lr0=1.0 / tau),
        "inverse_sqrt": Schedule("inverse_sqrt", lr0=1.0),
        "polynomial": Schedule("polynomial", lr0=1.0, power=0.75),
        "exponential": Schedule("exponential", lr0=0.5, gamma=0.97),
    }[kind]


def schedule_label(schedule: Schedule) -> str:
    """A short formula for a schedule's step size, e.g. ``eta_t = 1/(t+1)``."""
    lr0 = f"{schedule.lr0:g}"
    return "eta_t = " + {
        "inverse": "1/(t+1)",
        "constant": lr0,
        "inverse_sqrt": f"{lr0}/sqrt(t)",
        "polynomial": f"{lr0}/t^{schedule.power:g}",
        "exponential": f"{lr0}*{schedule.gamma:g}^(t-1)",
    }[schedule.kind]


def if_schedules(tau: float = 8.0) -> dict[str, Schedule]:
    """The step-size schedules compared for the IF neuron in notebook 01, by display name."""
    names = {"inverse": "inverse 1/(t+1)", "constant": f"constant 1/tau (tau={tau:g})",
             "inverse_sqrt": "1/sqrt(t)", "polynomial": "1/t^0.75",
             "exponential": "exponential 0.5*0.97^(t-1)"}
    return {label: if_schedule(kind, tau) for kind, label in names.items()}


def default_loss_steps(T: int, count: int = 6) -> list[int]:
    """Up to ``count`` time-steps from 1 to T, spaced evenly in log (notebook 01's default)."""
    return sorted({max(1, round(T ** (k / (count - 1)))) for k in range(count)})


def reach_envelope(lr0: float, gamma: float, T: int) -> torch.Tensor:
    """sum_{s<=t} eta_s = lr0 (1 - gamma^t) / (1 - gamma) for t = 1..T: the farthest a signGD
    output estimate that starts at 0 can be from 0 after t steps (less after any step back)."""
    return Schedule("exponential", lr0=lr0, gamma=gamma).etas(T, dtype=torch.float64).cumsum(0)


def redraw_zero_layers(model: nn.Module, seed: int = 0) -> list[str]:
    """Re-initialise every Linear / Conv layer whose weight is all zero (timm zero-initialises
    the classifier of Mixer, ResMLP and gMLP, so with random weights their output is exactly
    zero and every error relative to it is meaningless). Only for models created with random
    weights; returns the names of the layers it re-drew (and warns)."""
    redrawn = []
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and weight is not None \
                and not weight.detach().any():
            with torch.no_grad():
                fan_in = weight[0].numel()
                weight.copy_(torch.randn(weight.shape, generator=gen).to(weight) / math.sqrt(fan_in))
            redrawn.append(name)
    if redrawn:
        warnings.warn(f"layer(s) {', '.join(redrawn)} were initialised to zero (the ANN output "
                      "would be all zero); re-drawn at random, std 1/sqrt(fan_in)", stacklevel=2)
    return redrawn


def if_error_vs_T(schedules: dict[str, Schedule], Ts: Sequence[int], points: int = 201
                  ) -> dict[str, list[float]]:
    """Max over x in [-0.5, 1.5] of |rate_T - clip(x, 0, 1)| for each schedule and T."""
    x = torch.linspace(-0.5, 1.5, points, dtype=torch.float64)
    out = {}
    for name, sched in schedules.items():
        tr = simulate_if_neuron(x, max(Ts), schedule=sched)
        out[name] = [tr.error[t - 1].abs().max().item() for t in Ts]
    return out


def loglog_slope(Ts: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(T)."""
    lx = torch.log(torch.tensor(Ts, dtype=torch.float64))
    ly = torch.log(torch.tensor(errors, dtype=torch.float64).clamp_min(1e-300))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


@dataclass
class TargetErrors:
    """Max and mean |v_T - g(x)| over an input grid, per target and T."""

    Ts: list[int]
    max_error: dict[str, list[float]]
    mean_error: dict[str, list[float]]


def default_grid(target: str, points: int = 201) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """An input grid inside each target's comfortable range (outputs within the 3.0 bound)."""
    arity = get_target(target).arity
    if arity == 1:
        hi = 1.0 if target in ("exp", "square") else 2.0
        return torch.linspace(-hi, hi, points, dtype=torch.float64)
    side = int(math.sqrt(points)) + 1
    g1 = torch.linspace(0.2, 1.5, side, dtype=torch.float64)
    g2 = torch.linspace(0.6, 1.5, side, dtype=torch.float64)  # x1/x2 <= 2.5, x1/sqrt(x2) <= 1.94
    a, b = torch.meshgrid(g1, g2, indexing="ij")
    if target in ("max", "mul"):
        a = a * 2 - 1.5
    return a.flatten(), b.flatten()


def signgd_error_vs_T(targets: Sequence[str], Ts: Sequence[int],
                      dynamics: SignGDDynamics | None = None, points: int = 201) -> TargetErrors:
    """Error of signGD neurons against their targets over :func:`default_grid`, per T."""
    res = TargetErrors(list(Ts), {}, {})
    for target in targets:
        tr = simulate_neuron(target, default_grid(target, points), max(Ts), dynamics)
        res.max_error[target] = [tr.max_error()[t - 1].item() for t in Ts]
        res.mean_error[target] = [tr.mean_error()[t - 1].item() for t in Ts]
    return res


def lr_gamma_sweep(target: str, x: torch.Tensor, T: int, lr0s: Sequence[float],
                   gammas: Sequence[float]) -> torch.Tensor:
    """(len(gammas), len(lr0s)) max error at T of ``target`` over inputs ``x``."""
    out = torch.zeros(len(gammas), len(lr0s))
    for i, g in enumerate(gammas):
        for j, lr in enumerate(lr0s):
            tr = simulate_neuron(target, x, T, SignGDDynamics(lr0=lr, gamma=g))
            out[i, j] = tr.max_error()[-1]
    return out


@dataclass
class AccuracyCurve:
    """Accuracy and relative logit error against T for one model and one conversion mode."""

    model: str
    mode: str
    Ts: list[int]
    accuracy: list[float]
    rel_error: list[float]
    ann_accuracy: float
    sops: list[float]
    snn_energy_uj: list[float]
    ann_energy_uj: float


def accuracy_vs_T(name: str, model: torch.nn.Module, calibration: torch.Tensor,
                  x: torch.Tensor, y: torch.Tensor, Ts: Sequence[int], mode: str = "paper",
                  energy_samples: int = 16) -> AccuracyCurve:
    """Convert ``model`` with dynamics ``mode`` and measure it at every T in one anytime run."""
    snn: SpikingNetwork = convert(model, calibration, dynamics=mode)
    with torch.no_grad():
        ref = model(x)
    ann_acc = (ref.argmax(-1) == y).float().mean().item()
    out = snn(x, list(Ts))
    acc = [(o.argmax(-1) == y).float().mean().item() for o in out]
    rel = [((o - ref).norm() / ref.norm()).item() for o in out]
    xs = x[:energy_samples]
    stats = spike_stats_over_T(snn, xs, Ts)  # one run of max(Ts) steps
    return AccuracyCurve(name, mode, list(Ts), acc, rel, ann_acc, [s.sops for s in stats],
                         [s.snn_energy_uj for s in stats], stats[0].ann_energy_uj)
