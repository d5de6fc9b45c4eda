"""Figures of a conversion (notebook 03): where the SNN departs from the ANN."""
from __future__ import annotations

import html

import matplotlib
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ..conversion import SpikingNetwork
from ..probes import LayerErrorTable, SpikeStats, TraceProbe


def layer_heatmap(table: LayerErrorTable, metric: str = "rel_l2") -> Figure:
    """Layer x time-step heatmap of one error metric (log colour scale), values annotated."""
    data = getattr(table, metric).clamp_min(1e-6)
    fig = Figure(figsize=(1.2 * len(table.timestamps) + 3.5, 0.32 * len(table.layers) + 1.6),
                 layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(data, aspect="auto", cmap="magma_r", norm=LogNorm(vmin=float(data.min()),
                                                                    vmax=float(data.max())))
    ax.set_xticks(range(len(table.timestamps)), [str(t) for t in table.timestamps])
    ax.set_yticks(range(len(table.layers)), table.layers, fontsize=7)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2g}", ha="center", va="center", fontsize=6,
                    color="white" if data[i, j] > data.mean() else "black")
    ax.set_xlabel("T (time-steps)")
    ax.set_title(f"{metric} of each layer against the ANN")
    fig.colorbar(im, ax=ax, label=metric)
    return fig


def layer_heatmap_plotly(table: LayerErrorTable, metric: str = "rel_l2"):
    """Interactive plotly heatmap; hovering shows layer, target, T and the error."""
    import plotly.graph_objects as go

    data = getattr(table, metric)
    hover = [[f"layer {l}<br>target {table.targets[i]}<br>T {t}<br>{metric} {data[i, j]:.4g}"
              for j, t in enumerate(table.timestamps)] for i, l in enumerate(table.layers)]
    fig = go.Figure(go.Heatmap(z=torch.log10(data.clamp_min(1e-6)).tolist(),
                               x=[str(t) for t in table.timestamps], y=table.layers,
                               text=hover, hoverinfo="text", colorscale="Magma", reversescale=True,
                               colorbar=dict(title=f"log10 {metric}")))
    fig.update_layout(title=f"{metric} per layer and T (hover for values)", height=max(320, 22 * len(table.layers)),
                      yaxis=dict(autorange="reversed"), margin=dict(l=160, r=20, t=50, b=40))
    return fig


_PLOTLY_JS_SHOWN = [False]


def show_plotly(fig) -> None:
    """Display a plotly figure as self-contained HTML (plotly.js embedded once per kernel), so
    it survives nbconvert and works offline."""
    from IPython.display import HTML, display

    include = not _PLOTLY_JS_SHOWN[0]
    _PLOTLY_JS_SHOWN[0] = True
    display(HTML(fig.to_html(include_plotlyjs=include, full_html=False)))


def error_vs_T_per_layer(table: LayerErrorTable, metric: str = "rel_l2") -> Figure:
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
    ax.set_xlabel("T")
    ax.set_ylabel(metric)
    ax.set_title("Error against T per layer (colour: depth)")
    ax.legend(fontsize=6, ncol=2)
    return fig


def activation_scatter(ann: torch.Tensor, snn: torch.Tensor, layer: str, T: int,
                       max_points: int = 4000) -> Figure:
    """ANN activation against the SNN's decoded activation for one layer at one T."""
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
    ax.set_title(f"{layer}: ANN vs SNN at T={T}")
    ax.legend(fontsize=8)
    return fig


def membrane_traces(probe: TraceProbe, targets: torch.Tensor | None = None,
                    bound: float | None = None) -> Figure:
    """Membrane v_t of the probed neurons (with their ANN targets dashed) and their spikes."""
    v, s = probe.v, probe.spikes
    t = torch.arange(1, v.shape[0] + 1)
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax, ax_s = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for k in range(v.shape[1]):
        line, = ax.plot(t, v[:, k], lw=1, label=f"neuron {int(probe.indices[k])}")
        if targets is not None:
            ax.axhline(float(targets[k]), color=line.get_color(), ls="--", lw=0.8)
        fired = s[:, k] > 0
        ax_s.scatter(t[fired], torch.full((int(fired.sum()),), k), s=4, color=line.get_color())
    if bound is not None:
        for b in (bound, -bound):
            ax.axhline(b, color="gray", ls=":", lw=0.8)
    ax.set_ylabel("membrane v_t (dashed: ANN target)")
    ax.set_title(f"Membrane traces of layer {probe.layer} (dotted: reachable range)")
    ax.legend(fontsize=7, ncol=3)
    ax_s.set_yticks(range(v.shape[1]))
    ax_s.set_ylabel("spikes")
    ax_s.set_xlabel("t")
    return fig


def firing_rates(stats: SpikeStats) -> Figure:
    """Firing rate (spikes per neuron per step) of every layer."""
    names = list(stats.firing_rate)
    fig = Figure(figsize=(8, 0.28 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(names)), [stats.firing_rate[n] for n in names], color="tab:purple")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"firing rate (spikes / neuron / step), T={stats.T}")
    ax.set_title(f"Firing rates; SOPs {stats.sops:.3g}/sample, energy {stats.snn_energy_uj:.3g} uJ "
                 f"(ANN {stats.ann_energy_uj:.3g} uJ)", fontsize=9)
    return fig


def replaced_ops_table(snn: SpikingNetwork) -> str:
    """HTML table: each neuron population, its target, its role and the op it replaced."""
    head = "<tr><th>neuron layer</th><th>target</th><th>role</th><th>replaced op</th></tr>"
    rows = "".join(
        f"<tr><td>{html.escape(r['neuron'])}</td><td>{html.escape(r['target'])}</td>"
        f"<td>{html.escape(r['role'])}</td><td>{html.escape(r['source'])}</td></tr>"
        for r in snn.replaced)
    return f"<table>{head}{rows}</table>"


__all__ = ["activation_scatter", "error_vs_T_per_layer", "firing_rates", "layer_heatmap",
           "layer_heatmap_plotly", "membrane_traces", "replaced_ops_table", "show_plotly"]
