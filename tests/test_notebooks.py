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

    for name in ALL:
        found = inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))
        assert "INTERACTIVE" in found and "METRICS_PATH" in found
        assert all(p["help"] for p in found.values()), f"{name}: a parameter lost its comment"


@pytest.mark.notebook
def test_01_neuron_as_optimizer(tmp_path):
    m = run_notebook("01_neuron_as_optimizer", tmp_path, X=0.4, T=48, T_LIST=[16, 64, 256],
                     LOSS_STEPS=[1, 4, 16], GRID_POINTS=81)
    assert m["T"] == 48 and m["target"] == pytest.approx(0.4)
    assert m["final_error"] <= 2.5 / 48
    inverse = m["schedule_errors"]["inverse 1/(t+1)"]
    assert inverse[0] > inverse[1] > inverse[2]
    assert all(e <= 2.5 for e in m["inverse_error_times_T"])
    assert -1.3 < m["inverse_loglog_slope"] < -0.7
    ema = m["schedule_errors"]["constant 1/tau (tau=8)"]
    assert ema[-1] > inverse[-1]  # EMA coding stalls at an error of order 1/tau


@pytest.mark.notebook
def test_02_signgd_nonlinearities(tmp_path):
    m = run_notebook("02_signgd_nonlinearities", tmp_path, T=64, T_LIST=[8, 32, 128],
                     GRID_POINTS=81, LR0_SWEEP=[0.1, 0.15], GAMMA_SWEEP=[0.9, 0.95])
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
panel.controls["x"].value = 1.2
after = panel.redraws
target_line = panel.figure.axes[0].lines[2]
json.dump({"before": before, "after": after, "changed": panel.figure is not first,
           "target": float(target_line.get_ydata()[0]),
           "shown": [sorted(o["data"]) for o in panel.output.outputs]}, open("widget.json", "w"))
"""
    run_notebook("01_neuron_as_optimizer", tmp_path, extra_cells=[check], INTERACTIVE=True,
                 T=16, T_LIST=[16, 32], LOSS_STEPS=[1, 4], GRID_POINTS=21)
    w = json.loads((tmp_path / "widget.json").read_text())
    assert w["after"] == w["before"] + 1 and w["changed"]
    assert w["target"] == pytest.approx(1.0)  # clip(1.2, 0, 1)
    assert len(w["shown"]) == 1 and "image/png" in w["shown"][0]  # the panel shows the new figure
