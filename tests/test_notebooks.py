"""Notebooks: committed clean, parametrised, and executed headlessly with small parameters."""
from __future__ import annotations

import json

import nbformat
import pytest

from notebook_runner import NOTEBOOKS, run_notebook

ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", ALL)
def test_committed_without_outputs_and_with_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "stored outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = tagged[0].source
    assert "INTERACTIVE = False" in params and "METRICS_PATH" in params
    # every parameter is an annotated literal
    for line in params.splitlines():
        if "=" in line and not line.startswith("#"):
            assert "#" in line, f"parameter without a comment: {line}"
            compile(line.split("#")[0], "<param>", "exec")


def test_papermill_sees_every_parameter():
    from papermill.inspection import inspect_notebook

    from signgd_lab.notebook_params import parameter_specs

    for name in ALL:
        found = inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
        # papermill skips a line holding a second "=", so help and rules avoid "="
        assert list(found) == list(parameter_specs(name))
        assert "INTERACTIVE" in found and "METRICS_PATH" in found
        assert all(p["help"] for p in found.values()), f"{name}: a parameter lost its comment"


@pytest.mark.notebook
def test_01_neuron_as_optimizer(tmp_path):
    # no LOSS_STEPS: its default follows T (the committed default must not break T=48)
    m = run_notebook("01_neuron_as_optimizer", tmp_path, X=0.4, T=48, T_LIST=[16, 64, 256],
                     GRID_POINTS=81)
    assert m["T"] == 48 and m["target"] == pytest.approx(0.4)
    assert m["loss_steps"][0] == 1 and m["loss_steps"][-1] == 48
    assert m["final_error"] <= 2.5 / 48
    inverse = m["schedule_errors"]["inverse 1/(t+1)"]
    assert inverse[0] > inverse[1] > inverse[2]
    assert all(e <= 2.5 for e in m["inverse_error_times_T"])
    assert -1.3 < m["inverse_loglog_slope"] < -0.7
    ema = m["schedule_errors"]["constant 1/tau (tau=8)"]
    assert ema[-1] > inverse[-1]  # EMA coding stalls at an error of order 1/tau


@pytest.mark.notebook
def test_02_signgd_nonlinearities(tmp_path):
    # TARGETS as raw papermill passes `-p TARGETS relu,...`: a string, typed by the notebook
    m = run_notebook("02_signgd_nonlinearities", tmp_path, T=64, T_LIST=[8, 32, 128],
                     GRID_POINTS=81, LR0_SWEEP=[0.1, 0.15], GAMMA_SWEEP=[0.9, 0.95],
                     TARGETS="relu,leaky_relu,abs,gelu")
    assert m["targets"] == ["relu", "leaky_relu", "abs", "gelu"] and m["sweep_target"] == "relu"
    assert m["output_bound"] == pytest.approx(3.0)
    for target in ("relu", "leaky_relu", "abs", "gelu"):
        assert m["max_error_at_T"][target] < 0.02
    for target, errs in m["max_error_vs_T"].items():
        assert errs[-1] < errs[0], target
    assert m["beyond_range_final_v"] == pytest.approx(m["output_bound"], abs=0.01)
    assert m["beyond_range_max_abs_v"] <= m["output_bound"] + 1e-9


@pytest.mark.notebook
def test_widgets_redraw_in_a_kernel(tmp_path):
    check = """
import json
panel = trajectory_panel
before, first = panel.redraws, panel.figure
loss_before = loss_panel.redraws
panel.controls["x"].value = 1.2
after = panel.redraws
target_line = panel.figure.axes[0].lines[2]
json.dump({"before": before, "after": after, "changed": panel.figure is not first,
           "linked": loss_panel.redraws - loss_before, "loss_x": loss_panel.controls["x"].value,
           "target": float(target_line.get_ydata()[0]),
           "shown": [sorted(o["data"]) for o in panel.output.outputs]}, open("widget.json", "w"))
"""
    run_notebook("01_neuron_as_optimizer", tmp_path, extra_cells=[check], INTERACTIVE=True,
                 T=16, T_LIST=[16, 32], LOSS_STEPS=[1, 4], GRID_POINTS=21)
    w = json.loads((tmp_path / "widget.json").read_text())
    assert w["after"] == w["before"] + 1 and w["changed"]
    assert w["linked"] == 1 and w["loss_x"] == 1.2  # one x for both panels of 01
    assert w["target"] == pytest.approx(1.0)  # clip(1.2, 0, 1)
    assert len(w["shown"]) == 1 and "image/png" in w["shown"][0]  # the panel shows the new figure


@pytest.mark.notebook
def test_bad_parameter_stops_a_raw_papermill_run(tmp_path):
    """papermill without the CLI gets the same check, in the notebook's first code cell."""
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        run_notebook("01_neuron_as_optimizer", tmp_path, SCHEDULE="cosine")
    assert "SCHEDULE='cosine': 'cosine' is not one of inverse, constant" in str(err.value)


def test_panel_shows_its_error_and_recovers():
    """A failing draw replaces the figure by the error in the panel's own output; the next
    good value draws again."""
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from signgd_lab.viz.widgets import LivePanel

    def draw(n):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        fig = Figure()
        fig.subplots().plot(range(n + 2))
        return fig

    panel = LivePanel(draw, {"n": widgets.IntText(value=1)}, title="demo")
    assert panel.redraws == 1 and panel.error is None
    panel.controls["n"].value = -5
    shown = panel.output.outputs[0]["data"]
    assert panel.error == "ValueError: n must be >= 0, got -5" and panel.redraws == 1
    assert "signgd-panel-error" in shown["text/html"] and "image/png" not in shown
    assert panel.status.value == ""  # the "computing..." note is cleared
    panel.controls["n"].value = 3
    assert panel.error is None and panel.redraws == 2
    assert len(panel.figure.axes[0].lines[0].get_xdata()) == 5


def test_zero_initialised_layers_are_redrawn_and_the_heatmap_scale_is_robust():
    """A zero head (timm's Mixer/ResMLP/gMLP initialisation) gives an all-zero output: it is
    re-drawn with a warning; one degenerate row does not set the heatmap's colour range."""
    import torch
    from torch import nn

    from signgd_lab.experiments import redraw_zero_layers
    from signgd_lab.viz.conversion import color_range

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    first = model[0].weight.detach().clone()
    x = torch.randn(5, 4)
    assert not model(x).any()
    with pytest.warns(UserWarning, match="initialised to zero"):
        assert redraw_zero_layers(model) == ["2"]
    assert model(x).abs().min() > 0 and torch.equal(model[0].weight, first)
    assert redraw_zero_layers(model) == []  # nothing left to re-draw

    errors = torch.full((20, 3), 0.01)
    errors[:, 0] = 0.1
    errors[7] = 1e6  # one degenerate row
    vmin, vmax = color_range(errors)
    assert vmin == pytest.approx(0.01) and vmax == pytest.approx(0.1)


def test_schedules_and_reach_of_the_notebooks():
    """01's SCHEDULE names every schedule kind; the reach envelope is lr0 (1-gamma^t)/(1-gamma);
    01's default loss steps follow T."""
    import torch

    from signgd_lab import experiments
    from signgd_lab.dynamics.schedules import SCHEDULE_KINDS

    for kind in SCHEDULE_KINDS:
        sched = experiments.if_schedule(kind, tau=4.0)
        assert sched.kind == kind and experiments.schedule_label(sched).startswith("eta_t = ")
    assert experiments.if_schedule("constant", 4.0).lr0 == 0.25
    env = experiments.reach_envelope(0.15, 0.95, 64)
    t = torch.arange(1, 65, dtype=torch.float64)
    assert torch.allclose(env, 0.15 * (1 - 0.95**t) / (1 - 0.95))
    assert experiments.default_loss_steps(48) == [1, 2, 5, 10, 22, 48]
    assert experiments.default_loss_steps(1) == [1]
