"""Figures of single-neuron dynamics (notebooks 01 and 02)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import torch
from matplotlib.figure import Figure

from ..dynamics import SignGDDynamics, Trajectory, get_target, simulate_neuron
from ..experiments import TargetErrors, default_grid, reach_envelope, relu1_loss


def if_trajectory(tr: Trajectory, index: int = 0, title: str = "") -> Figure:
    """Input estimate, firing rate and spike raster of one IF neuron of a trajectory."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax, ax_s = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    t = torch.arange(1, tr.T + 1)
    ax.plot(t, tr.x_hat[:, index], label=r"input estimate $\hat{x}_t$", color="tab:gray")
    ax.plot(t, tr.v[:, index], label=r"firing rate $v_t$", color="tab:blue")
    ax.axhline(tr.target_value[index].item(), ls="--", color="tab:red",
               label=r"target clip$(x, 0, 1)$")
    ax.set_ylabel("value")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "IF neuron: the subgradient method on ReLU(x - y) + y^2/2")
    spikes = tr.spikes[:, index] > 0
    ax_s.vlines(t[spikes], 0, 1, color="black", lw=1)
    ax_s.set_yticks([])
    ax_s.set_ylabel("spikes\n(v steps up)", fontsize=8)
    ax_s.set_xlabel("time-step t")
    return fig


def if_loss_tightening(tr: Trajectory, x: float, steps: Sequence[int], index: int = 0) -> Figure:
    """L(.; x_hat_t) for a few t tightening onto L(.; x), with the iterates v_t marked by
    whether the step was a spike (step up) or not (step down)."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    ax = fig.subplots()
    y = torch.linspace(-0.25, 1.25, 301, dtype=torch.float64)
    cmap = matplotlib.colormaps["viridis"]
    for k, t in enumerate(steps):
        xh = tr.x_hat[t - 1, index].item()
        ax.plot(y, relu1_loss(y, xh), color=cmap(k / max(len(steps) - 1, 1)), lw=1,
                label=fr"$L(\cdot;\hat{{x}}_{{{t}}})$, $\hat{{x}}={xh:.3f}$")
    ax.plot(y, relu1_loss(y, x), color="tab:red", lw=2.5, ls="--", label=r"$L(\cdot; x)$")
    upto = max(steps)
    v = tr.v[:upto, index]
    loss_v = relu1_loss(v.double(), x)
    fired = tr.spikes[:upto, index] > 0
    ax.plot(v, loss_v, color="black", lw=0.5, alpha=0.5)
    ax.scatter(v[fired], loss_v[fired], marker="^", color="tab:green", zorder=3, label="spike: v steps up")
    ax.scatter(v[~fired], loss_v[~fired], marker="v", color="tab:orange", zorder=3,
               label="no spike: v steps down")
    ax.set_xlabel("y")
    ax.set_ylabel("loss")
    ax.set_title(f"Loss tightening onto L(.; x={x:g}) with the spike-labelled iterates v_t (t <= {upto})")
    ax.legend(fontsize=7, ncol=2)
    return fig


def schedule_errors(errors: dict[str, list[float]], Ts: Sequence[int]) -> Figure:
    """Log-log max error against T, one line per schedule, with a 1/T guide."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, errs in errors.items():
        ax.loglog(Ts, errs, marker="o", label=name)
    ax.loglog(Ts, [1.0 / t for t in Ts], ls=":", color="black", label="1/T guide")
    ax.set_xlabel("T (time-steps)")
    ax.set_ylabel("max |rate - clip(x,0,1)|, x in [-0.5, 1.5]")
    ax.set_title("IF neuron: error against T per step-size schedule")
    ax.legend(fontsize=8)
    return fig


def signgd_trajectories(targets: Sequence[str], x: float, T: int,
                        dynamics: SignGDDynamics | None = None) -> Figure:
    """v_t of one signGD neuron per target for input ``x`` (x and x/2 for two-input targets)."""
    n = len(targets)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    t = torch.arange(1, T + 1)
    for ax, name in zip(axes, targets):
        arity = get_target(name).arity
        inp = torch.tensor([x], dtype=torch.float64)
        args = inp if arity == 1 else (inp, torch.tensor([abs(x) / 2 + 0.5], dtype=torch.float64))
        tr = simulate_neuron(name, args, T, dynamics)
        ax.plot(t, tr.v[:, 0], color="tab:blue", lw=1.2, label="v_t")
        ax.axhline(tr.target_value[0].item(), color="tab:red", ls="--", label="target")
        fired = tr.spikes[:, 0] > 0
        ax.scatter(t[fired], tr.v[fired, 0], s=6, color="black", zorder=3,
                   label="spike (v steps down)")
        label = f"x={x:g}" if arity == 1 else f"x1={x:g}, x2={abs(x) / 2 + 0.5:g}"
        ax.set_title(f"{name}  ({label})", fontsize=9)
        ax.set_xlabel("t")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    return fig


def signgd_approximation(targets: Sequence[str], T: int,
                         dynamics: SignGDDynamics | None = None) -> Figure:
    """v_T(x) against g(x) over each unary target's grid, and below each the residual
    v_T(x) - g(x) (where the two curves coincide, only the residual shows the error)."""
    targets = [t for t in targets if get_target(t).arity == 1]
    cols = min(3, len(targets))
    rows = (len(targets) + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 3.8 * rows), layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[2, 1] * rows)
    for k, name in enumerate(targets):
        r, c = divmod(k, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax_res = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        x = default_grid(name, 201)
        tr = simulate_neuron(name, x, T, dynamics)
        ax.plot(x, tr.target_value, color="tab:red", lw=2.5, label="g(x)")
        ax.plot(x, tr.v[-1], color="tab:blue", lw=1, ls="--", label=f"v_T, T={T}")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelbottom=False)
        ax_res.plot(x, tr.v[-1] - tr.target_value, color="tab:purple", lw=1)
        ax_res.axhline(0, color="gray", lw=0.5)
        ax_res.set_ylabel("v_T - g", fontsize=8)
        ax_res.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax_res.set_xlabel("x", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7)
    return fig


def target_errors(res: TargetErrors) -> Figure:
    """Log-log max and mean error against T per target."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_max, ax_mean = fig.subplots(1, 2, sharey=True)
    for name in res.max_error:
        ax_max.loglog(res.Ts, res.max_error[name], marker="o", label=name)
        ax_mean.loglog(res.Ts, res.mean_error[name], marker="o", label=name)
    ax_max.set_title("max |v_T - g(x)| over the grid")
    ax_mean.set_title("mean |v_T - g(x)| over the grid")
    ax_max.set_ylabel("error (log scale)")
    for ax in (ax_max, ax_mean):
        ax.set_xlabel("T (log scale)")
    ax_max.legend(fontsize=7, ncol=2)
    return fig


def lr_gamma_figure(errors: torch.Tensor, lr0s: Sequence[float], gammas: Sequence[float],
                    target: str, T: int) -> Figure:
    """Max error at T against lr0, one line per gamma, with the reachable range marked."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, g in enumerate(gammas):
        ax.semilogy(lr0s, errors[i], marker="o", label=f"gamma={g:g} (bound {lr0s[0] / (1 - g):.2g}.."
                    f"{lr0s[-1] / (1 - g):.2g})")
    ax.set_xlabel("lr0")
    ax.set_ylabel(f"max error at T={T}")
    ax.set_title(f"{target}: effect of lr0 and gamma")
    ax.legend(fontsize=7)
    return fig


def range_bound_figure(x: float, T: int, settings: Sequence[tuple[float, float]]) -> Figure:
    """ReLU neurons fed an input beyond reach: v_t follows the envelope
    sum_{s<=t} eta_s = lr0 (1 - gamma^t) / (1 - gamma) (dotted) and saturates at its limit
    lr0 / (1 - gamma)."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    t = torch.arange(1, T + 1)
    styles = ["-", "--", "-."]
    for k, (lr0, gamma) in enumerate(settings):
        dyn = SignGDDynamics(lr0=lr0, gamma=gamma)
        tr = simulate_neuron("relu", torch.tensor([x], dtype=torch.float64), T, dyn)
        line, = ax.plot(t, tr.v[:, 0], lw=2, ls=styles[k % len(styles)],
                        label=f"lr0={lr0:g}, gamma={gamma:g} (limit {dyn.output_bound:.3g})")
        ax.plot(t, reach_envelope(lr0, gamma, T), color="black", ls=":", lw=1.2, zorder=3)
    ax.axhline(x, color="tab:red", ls="--", label=f"target relu(x) = {x:g}")
    ax.set_xlabel("t")
    ax.set_ylabel("v_t")
    ax.set_title("Reach after t steps: lr0 (1 - gamma^t) / (1 - gamma) (dotted, one per setting)",
                 fontsize=10)
    ax.legend(fontsize=8)
    return fig


__all__ = ["if_loss_tightening", "if_trajectory", "lr_gamma_figure", "range_bound_figure",
           "schedule_errors", "signgd_approximation", "signgd_trajectories", "target_errors"]
