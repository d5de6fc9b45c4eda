"""Figures of accuracy and cost against time-steps (notebook 04)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ..experiments import AccuracyCurve

_STYLE = {"paper": "-", "if": "--", "extended": "-."}


def _curves_figure(curves: Sequence[AccuracyCurve], panels: Sequence[tuple[str, str, str, str]],
                   ann_line: tuple[int, Callable[[AccuracyCurve], float]] | None,
                   height: float) -> tuple[Figure, list[Axes]]:
    """One panel per (field, y label, title, axes scale): one colour per model, one line style
    per mode; ``ann_line`` = (panel index, value) draws the ANN as a dotted line per model."""
    fig = Figure(figsize=(12, height), layout="constrained")
    axes = list(fig.subplots(1, len(panels)))
    colors: dict[str, str] = {}
    for c in curves:
        color = colors.setdefault(c.model, f"C{len(colors)}")
        for ax, (key, _, _, scale) in zip(axes, panels):
            plot = ax.semilogx if scale == "semilogx" else ax.loglog
            plot(c.Ts, getattr(c, key), ls=_STYLE.get(c.mode, ":"), marker="o", color=color,
                 label=f"{c.model} {c.mode}")
    if ann_line is not None:
        index, value = ann_line
        for model, color in colors.items():
            axes[index].axhline(value(next(c for c in curves if c.model == model)), color=color,
                                ls=":", lw=1)
    ts = sorted({t for c in curves for t in c.Ts})
    for ax, (_, ylabel, title, _) in zip(axes, panels):
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.set_xlabel("T")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[-1].legend(fontsize=7, ncol=2)
    return fig, axes


def accuracy_figure(curves: Sequence[AccuracyCurve]) -> Figure:
    """Accuracy and relative logit error against T; one colour per model, one line style per
    mode; the ANN accuracy as a dotted line in the model's colour."""
    fig, _ = _curves_figure(curves, [
        ("accuracy", "test accuracy (dotted: ANN)", "Accuracy against time-steps", "semilogx"),
        ("rel_error", "relative logit error", "Relative logit error against time-steps", "loglog"),
    ], (0, lambda c: c.ann_accuracy), 4.5)
    return fig


def energy_figure(curves: Sequence[AccuracyCurve]) -> Figure:
    """Synaptic operations and the energy estimate against T (ANN energy dotted)."""
    fig, _ = _curves_figure(curves, [
        ("sops", "synaptic operations / sample", "Synaptic operations", "loglog"),
        ("snn_energy_uj", "energy estimate (uJ) per sample",
         "Energy (0.9 pJ/AC, 4.6 pJ/MAC; dotted: ANN)", "loglog"),
    ], (1, lambda c: c.ann_energy_uj), 4.2)
    return fig
