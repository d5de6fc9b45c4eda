"""Figures of a conversion (notebook 03): where the SNN departs from the ANN."""
from __future__ import annotations

import html
import math

import matplotlib
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from ..conversion import SpikingNetwork
from ..probes import LayerErrorTable, SpikeStats, TraceProbe


def _titled(context: str, title: str) -> str:
    return f"{context}: {title}" if context else title


def color_range(data: torch.Tensor, floor: float = 1e-6) -> tuple[float, float]:
    """(vmin, vmax) of a log colour scale over a (rows, columns) table such that no single row
    sets either end: with three rows or more, vmax is the second-largest row maximum and vmin
    the second-smallest row minimum (values beyond are drawn in the end colours). One
    degenerate row (all zero, or huge) thus cannot squeeze every other row into one colour."""
    values = torch.nan_to_num(data.double(), nan=floor, posinf=1e30).clamp_min(floor)
    values = values.reshape(values.shape[0], -1) if values.dim() > 1 else values.reshape(-1, 1)
    row_max = values.max(dim=1).values.sort().values
    row_min = values.min(dim=1).values.sort().values
    k = 1 if values.shape[0] >= 3 else 0
    vmin, vmax = float(row_min[k]), float(row_max[-1 - k])
    if vmax <= vmin:
        vmin, vmax = float(values.min()), float(values.max())
    if vmax <= vmin:
        vmax = vmin * 10
    return vmin, vmax


def layer_heatmap(table: LayerErrorTable, metric: str = "rel_l2", context: str = "") -> Figure:
    """Layer x time-step heatmap of one error metric (log colour scale that no single row
    sets, see :func:`color_range`), values annotated; ``context`` (e.g. the model and
    dynamics) prefixes the title."""
    raw = getattr(table, metric)
    data = raw.clamp_min(1e-6)
    vmin, vmax = color_range(raw)
    fig = Figure(figsize=(1.2 * len(table.timestamps) + 3.5, 0.32 * len(table.layers) + 1.6),
                 layout="constrained")
    ax = fig.subplots()
    norm = LogNorm(vmin=vmin, vmax=vmax, clip=True)
    im = ax.imshow(data, aspect="auto", cmap="magma_r", norm=norm)
    ax.set_xticks(range(len(table.timestamps)), [str(t) for t in table.timestamps])
    ax.set_yticks(range(len(table.layers)), table.layers, fontsize=7)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{float(raw[i, j]):.2g}", ha="center", va="center", fontsize=6,
                    color="white" if float(norm(float(data[i, j]))) > 0.6 else "black")
    ax.set_xlabel("T (time-steps)")
    ax.set_ylabel("layer (input at the top, output at the bottom)")
    ax.set_title(_titled(context, f"{metric} of each layer against the ANN"))
    fig.colorbar(im, ax=ax, label=f"{metric} (one outlying row drawn in the end colour)",
                 extend="both")
    return fig


def layer_heatmap_plotly(table: LayerErrorTable, metric: str = "rel_l2", context: str = ""):
    """Interactive plotly heatmap; hovering shows layer, target, T and the error; the colour
    bar is labelled in powers of ten and no single row sets its range."""
    import plotly.graph_objects as go

    data = getattr(table, metric)
    vmin, vmax = color_range(data)
    lo, hi = math.log10(vmin), math.log10(vmax)
    ticks = list(range(math.floor(lo), math.ceil(hi) + 1)) or [round(lo)]
    hover = [[f"layer {l}<br>target {table.targets[i]}<br>T {t}<br>{metric} {data[i, j]:.4g}"
              for j, t in enumerate(table.timestamps)] for i, l in enumerate(table.layers)]
    fig = go.Figure(go.Heatmap(
        z=torch.log10(data.clamp_min(1e-6)).tolist(), zmin=lo, zmax=hi,
        x=[str(t) for t in table.timestamps], y=table.layers, text=hover, hoverinfo="text",
        colorscale="Magma", reversescale=True,
        colorbar=dict(title=metric, tickvals=ticks, ticktext=[f"1e{k}" for k in ticks])))
    fig.update_layout(title=_titled(context, f"{metric} per layer and T (hover for values)"),
                      height=max(320, 22 * len(table.layers)),
                      xaxis=dict(title="T (time-steps)", type="category"),
                      yaxis=dict(title="layer (input at the top)", autorange="reversed"),
                      margin=dict(l=160, r=20, t=50, b=50))
    return fig


def show_plotly(fig) -> None:
    """Display a plotly figure as self-contained HTML with its own copy of plotly.js, so every
    output works on its own: after a browser reload, in nbconvert's HTML, and offline."""
    from IPython.display import HTML, display

    display(HTML(fig.to_html(include_plotlyjs=True, full_html=False)))


def error_vs_T_per_layer(table: LayerErrorTable, metric: str = "rel_l2", context: str = "") -> Figure:
    """Log-log error against T, one line per layer (the output thick and black)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    data = getattr(table, metric)
    n = len(table.layers) - 1
    for i, name in enumerate(table.layers):
        if name == "output":
            ax.loglog(table.timestamps, data[i], color="black", lw=2.5, marker="o", label="output")
        else:
            ax.loglog(table.timestamps, data[i], color=cmap(i / max(n - 1, 1)), lw=1,
                      label=name if n <= 12 else None)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(table.timestamps, [str(t) for t in table.timestamps])
    ax.set_xlabel("T (time-steps)")
    ax.set_ylabel(metric)
    ax.set_title(_titled(context, "error against T per layer (colour: depth)"))
    ax.legend(fontsize=6, ncol=2)
    return fig


def activation_scatter(ann: torch.Tensor, snn: torch.Tensor, layer: str, T: int,
                       max_points: int = 4000, context: str = "") -> Figure:
    """ANN activation against the SNN's decoded activation for one layer at one T (at most
    ``max_points`` points, evenly subsampled; the title says so)."""
    total = ann.numel()
    a, s = ann.flatten(), snn.flatten()
    if a.numel() > max_points:
        idx = torch.linspace(0, a.numel() - 1, max_points).long()
        a, s = a[idx], s[idx]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(a, s, s=3, alpha=0.4)
    lo, hi = float(min(a.min(), s.min())), float(max(a.max(), s.max()))
    ax.plot([lo, hi], [lo, hi], color="tab:red", lw=1, label="y = x")
    ax.set_xlabel("ANN activation")
    ax.set_ylabel(f"SNN decoded estimate at T={T}")
    shown = f" ({a.numel()} of {total} values)" if a.numel() < total else ""
    ax.set_title(_titled(context, f"{layer}: ANN vs SNN at T={T}{shown}"), fontsize=9)
    ax.legend(fontsize=8)
    return fig


def membrane_traces(probe: TraceProbe, targets: torch.Tensor | None = None,
                    envelope: torch.Tensor | None = None, context: str = "") -> Figure:
    """Membrane v_t of the probed neurons (one colour, line style and marker each; each ANN
    target as a diamond of the same colour at the right edge), the reachable envelope
    ``+-envelope[t]`` (signGD: lr0 (1 - gamma^t) / (1 - gamma)) dotted, and the spikes."""
    v, s = probe.v, probe.spikes
    t = torch.arange(1, v.shape[0] + 1)
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax, ax_s = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "v", "D", "x", "P", "*"]
    every = max(1, v.shape[0] // 8)
    for k in range(v.shape[1]):
        line, = ax.plot(t, v[:, k], lw=1.1, ls=styles[k % len(styles)],
                        marker=markers[k % len(markers)], markevery=(k % every, every), ms=4,
                        label=f"neuron {int(probe.indices[k])}")
        if targets is not None:
            ax.plot([t[-1] * 1.02], [float(targets[k])], marker="D", ms=7, color=line.get_color(),
                    markeredgecolor="black", clip_on=False, ls="none")
        fired = s[:, k] > 0
        ax_s.scatter(t[fired], torch.full((int(fired.sum()),), k), s=4, color=line.get_color())
    if envelope is not None:
        env = envelope[: v.shape[0]]
        ax.plot(t, env, color="gray", ls=":", lw=1, label="reachable: +-sum of steps so far")
        ax.plot(t, -env, color="gray", ls=":", lw=1)
    ax.set_ylabel("membrane v_t (diamonds: ANN targets)")
    ax.set_title(_titled(context, f"membrane traces of layer {probe.layer}"), fontsize=10)
    ax.legend(fontsize=7, ncol=4)
    ax_s.set_yticks(range(v.shape[1]), [str(int(i)) for i in probe.indices], fontsize=7)
    ax_s.set_ylabel("spikes")
    ax_s.set_xlabel("t")
    return fig


def firing_rates(stats: SpikeStats, context: str = "") -> Figure:
    """Firing rate (spikes per neuron per step) of every layer."""
    names = list(stats.firing_rate)
    fig = Figure(figsize=(8, 0.28 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(names)), [stats.firing_rate[n] for n in names], color="tab:purple")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"firing rate (spikes / neuron / step), T={stats.T}")
    ax.set_title(_titled(context, f"firing rates; SOPs {stats.sops:.3g}/sample, energy "
                         f"{stats.snn_energy_uj:.3g} uJ (ANN {stats.ann_energy_uj:.3g} uJ)"),
                 fontsize=9)
    return fig


def replaced_ops_table(snn: SpikingNetwork) -> str:
    """HTML table: each neuron population, its target, its role and the op it replaced."""
    head = "<tr><th>neuron layer</th><th>target</th><th>role</th><th>replaced op</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(r['neuron'])}</td><td>{html.escape(r['target'])}</td>"
        f"<td>{html.escape(r['role'])}</td><td>{html.escape(r['source'])}</td></tr>"
        for r in snn.replaced)
    return f"<table>{head}{rows}</table>"


__all__ = ["activation_scatter", "color_range", "error_vs_T_per_layer", "firing_rates", "layer_heatmap",
           "layer_heatmap_plotly", "membrane_traces", "replaced_ops_table", "show_plotly"]
