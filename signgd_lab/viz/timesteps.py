"""Figures of accuracy and cost against time-steps (notebook 04)."""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ..experiments import AccuracyCurve

_STYLE = {"paper": "-", "if": "--", "extended": "-."}


def accuracy_figure(curves: Sequence[AccuracyCurve]) -> Figure:
    """Accuracy and relative logit error against T; one colour per model, one line style per
    mode; the ANN accuracy as a dotted line in the model's colour."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_acc, ax_err = fig.subplots(1, 2)
    colors = {}
    for c in curves:
        color = colors.setdefault(c.model, f"C{len(colors)}")
        ls = _STYLE.get(c.mode, ":")
        ax_acc.semilogx(c.Ts, c.accuracy, ls=ls, marker="o", color=color, label=f"{c.model} {c.mode}")
        ax_err.loglog(c.Ts, c.rel_error, ls=ls, marker="o", color=color, label=f"{c.model} {c.mode}")
    for model, color in colors.items():
        ann = next(c.ann_accuracy for c in curves if c.model == model)
        ax_acc.axhline(ann, color=color, ls=":", lw=1)
    ax_acc.set_xlabel("T")
    ax_acc.set_ylabel("test accuracy (dotted: ANN)")
    ax_err.set_xlabel("T")
    ax_err.set_ylabel("relative logit error")
    ax_acc.set_title("Accuracy against time-steps")
    ax_err.set_title("Relative logit error against time-steps")
    ax_err.legend(fontsize=7, ncol=2)
    return fig


def energy_figure(curves: Sequence[AccuracyCurve]) -> Figure:
    """Synaptic operations and the energy estimate against T (ANN energy dotted)."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_sop, ax_e = fig.subplots(1, 2)
    colors = {}
    for c in curves:
        color = colors.setdefault(c.model, f"C{len(colors)}")
        ls = _STYLE.get(c.mode, ":")
        ax_sop.loglog(c.Ts, c.sops, ls=ls, marker="o", color=color, label=f"{c.model} {c.mode}")
        ax_e.loglog(c.Ts, c.snn_energy_uj, ls=ls, marker="o", color=color, label=f"{c.model} {c.mode}")
    for model, color in colors.items():
        ann = next(c.ann_energy_uj for c in curves if c.model == model)
        ax_e.axhline(ann, color=color, ls=":", lw=1)
    ax_sop.set_xlabel("T")
    ax_sop.set_ylabel("synaptic operations / sample")
    ax_e.set_xlabel("T")
    ax_e.set_ylabel("energy estimate (uJ) per sample")
    ax_e.set_title("Energy (0.9 pJ/AC, 4.6 pJ/MAC; dotted: ANN)")
    ax_sop.set_title("Synaptic operations")
    ax_e.legend(fontsize=7, ncol=2)
    return fig
