"""`signgd-lab report`: the rendered report, its numbers, the browser view, failures, CLI."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signgd_lab.cli import build_parser, main
from signgd_lab.report import (NOTEBOOKS, ReportConfig, ReportError, external_resources,
                               render_html, run_report)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "reports"
    lines = []
    run_report(ReportConfig().quick(), out, log=lines.append)
    return out, lines


def metrics(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.metrics.json").read_text())


@pytest.mark.notebook
def test_report_numbers_are_reproducible(report, tmp_path):
    """The debugger notebook run again with the report's parameters gives the same numbers."""
    from notebook_runner import run_notebook

    out, _ = report
    params = ReportConfig().quick().notebook_parameters("03_conversion_debugger")
    again = run_notebook("03_conversion_debugger", tmp_path, **params)
    assert again == metrics(out, "03_conversion_debugger")


def visible_text(page: str) -> str:
    """The text a reader sees: scripts, styles and tags removed."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return re.sub(r"<[^>]+>", " ", page)


RAW_MATH = re.compile(r"\$[^$\n]+\$|\\(hat|mathrm|eta|gamma|sum|frac|cdot|le|to)\b")


def assert_offline_and_readable(page: str) -> None:
    """No script, stylesheet or image from the network; no formula left as raw LaTeX."""
    assert external_resources(page) == []
    assert "x-mathjax-config" not in page and "MathJax.Hub" not in page
    raw = RAW_MATH.findall(visible_text(page))
    assert not raw, raw[:5]


@pytest.mark.notebook
def test_report_has_every_notebook_and_progress(report):
    out, lines = report
    index = (out / "index.html").read_text()
    for name in NOTEBOOKS:
        page = (out / f"{name}.html").read_text()
        assert "data:image/png;base64" in page
        assert "import signgd_lab as sl" not in page and "METRICS_PATH =" not in page  # no code
        assert_offline_and_readable(page)
        assert page.count('href="index.html"') == 2  # back to the index, top and bottom
        assert '"output_rel_l2"' not in page and '"T_list"' not in page  # no JSON dump
        assert f"{name}.html" in index
        assert any(line.startswith("[") and name in line and "done" in line for line in lines)
    # the index lists each notebook's title and one-line summary
    assert "A spiking neuron is an optimizer" in index and "subgradient method" in index
    assert "Conversion debugger" in index and "at most 64 test inputs" in index
    meta = json.loads((out / "report.json").read_text())
    assert meta["parameters"]["timestamps"] == [8, 32, 128] and "torch" in meta["versions"]
    assert not list(out.parent.glob(".reports.partial-*"))  # staging folder swapped in


@pytest.mark.notebook
def test_debugger_errors_exist_for_every_layer_and_fall_with_T(report):
    out, _ = report
    m = metrics(out, "03_conversion_debugger")
    assert m["remaining_nonlinear"] == 0 and m["neuron_layers"] == len(m["layers"])
    for layer in m["layers"]:
        errs = m["layer_rel_l2"][layer]
        assert len(errs) == 3 and errs[-1] < errs[0], layer
    assert m["output_rel_l2"][-1] < m["output_rel_l2"][0]
    assert m["snn_accuracy"][-1] >= m["ann_accuracy"] - 0.05
    assert m["snn_energy_uj"] > 0 and m["trace_shape"][0] == 128


@pytest.mark.notebook
def test_accuracy_notebook_compares_paper_if_extended(report):
    out, _ = report
    m = metrics(out, "04_accuracy_vs_timesteps")
    modes = {(c["model"], c["mode"]) for c in m["curves"]}
    assert {("digits_cnn", "paper"), ("digits_cnn", "if"), ("digits_cnn", "extended"),
            ("digits_mlp", "paper"), ("digits_mlp", "extended")} <= modes
    assert "digits_mlp if" in m["skipped"]  # IF neurons convert ReLU networks only
    for c in m["curves"]:
        assert c["rel_error"][-1] < c["rel_error"][0], (c["model"], c["mode"])
        assert c["sops"][-1] > c["sops"][0]
    cnn_paper = next(c for c in m["curves"] if c["model"] == "digits_cnn" and c["mode"] == "paper")
    assert cnn_paper["accuracy"][-1] >= cnn_paper["ann_accuracy"] - 0.05


CHECK = r"""<script>
window.addEventListener('load', () => setTimeout(() => {
  const imgs = [...document.images];
  document.body.setAttribute('data-check', JSON.stringify({
    images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    plots: document.querySelectorAll('.js-plotly-plot').length,
    drawn: document.querySelectorAll('.js-plotly-plot svg.main-svg').length,
    raw_math: /\$[^$\n]+\$|\\(hat|mathrm|eta|gamma|frac)\b/.test(document.body.innerText)}));
}, 500));
</script></body>"""


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_report_figures_are_drawn_in_headless_chromium(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    out, _ = report
    for name in NOTEBOOKS:
        page = tmp_path / f"{name}.html"
        page.write_text((out / f"{name}.html").read_text().replace("</body>", CHECK, 1))
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: nothing resolves
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        found = re.search(r'data-check="([^"]*)"', dom)
        assert found, f"{name}: the check script did not run"
        check = json.loads(found.group(1).replace("&quot;", '"'))
        assert check["images"] >= 1 and check["decoded"] == check["images"], (name, check)
        assert check["drawn"] >= check["plots"], (name, check)
        assert not check["raw_math"], (name, check)
        if name == "03_conversion_debugger":
            assert check["plots"] == 1 and check["drawn"] >= 1


@pytest.mark.notebook
def test_failing_notebook_keeps_the_previous_report(tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "index.html").write_text("previous good report")
    config = ReportConfig(model="digits_mlp", dynamics="if", notebooks=["03"]).quick()
    with pytest.raises(ReportError) as err:
        run_report(config, out, log=lambda line: None)
    message = str(err.value)
    assert "03_conversion_debugger.ipynb failed in cell" in message and "ConversionError" in message
    assert (out / "index.html").read_text() == "previous good report"
    partial = Path(re.search(r"partial output kept in (\S+);", message).group(1))
    assert partial.exists() and (partial / "03_conversion_debugger.ipynb").exists()
    # the console script says the same and exits non-zero
    code = main(["report", "--out", str(out), "--notebooks", "03", "--model", "digits_mlp",
                 "--dynamics", "if", "--quick"])
    assert code == 1 and "failed in cell" in capsys.readouterr().err
    assert (out / "index.html").read_text() == "previous good report"


def _subcommand(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's own flags (derived from its actions, so a new flag is checked too)."""
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_help_documents_every_flag(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # --help unwrapped: each description stays verbatim
    parser = _subcommand(command)
    text = parser.format_help()
    flags = _flags(parser)
    assert len(flags) >= 15
    for action in flags:
        assert isinstance(action.help, str) and action.help.strip() and \
            action.help != argparse.SUPPRESS, f"{action.option_strings} has no help text"
        shown = text.index(action.option_strings[0])  # listed in --help ...
        assert text.find(action.help, shown) > shown, action.option_strings  # ... described


def test_report_flags_are_config_keys_and_state_their_defaults():
    """Every report flag that takes a value is a ReportConfig key named in --config's help, and
    its help states ReportConfig's default for it (so flags, YAML keys and defaults agree)."""
    parser = _subcommand("report")
    config_help = next(a.help for a in parser._actions if a.dest == "config")
    defaults = ReportConfig()
    keys = [a for a in _flags(parser)
            if a.nargs != 0 and a.dest not in ("out", "config", "param")]  # not run settings
    assert len(keys) >= 10
    for action in keys:
        assert action.dest in {f.name for f in dataclasses.fields(ReportConfig)}, action.dest
        assert re.search(rf"\b{action.dest}\b", config_help), action.dest
        value = getattr(defaults, action.dest)
        if isinstance(value, list):  # comma-separated; notebooks by number
            stated = "|".join(re.escape(sep.join(str(v)[:n] for v in value))
                              for sep, n in ((",", None), (", ", 2)))
        else:
            stated = re.escape(str(value))
        assert re.search(rf"default:? (all: )?({stated})\b|\b({stated}) \(default\)",
                         action.help), (action.dest, value, action.help)


def test_list_params_shows_every_notebook_parameter_with_its_rules(capsys):
    assert main(["report", "--list-params"]) == 0
    out = capsys.readouterr().out
    for line in ("--param 02.NAME=VALUE", "SCHEDULE", "one of inverse, constant",
                 "LOSS_STEPS", "in [1, T]", "TARGETS", "a one-input target", "SCATTER_T"):
        assert line in out, line


def test_list_models(capsys):
    assert main(["report", "--list-models"]) == 0
    out = capsys.readouterr().out
    for name in ("digits_cnn", "digits_vit", "timm"):
        assert name in out


@pytest.mark.parametrize("yaml_text,message", [
    ("seed: abc\n", "'seed' must be int"),
    ("timestamps: [64, 8]\n", "strictly increasing"),
    ("samples: 1.5\n", "'samples' must be int"),
    ("colour: blue\n", "unknown report parameter"),
    ("model: no_such_model\n", "unknown model"),
    ("notebooks: ['07']\n", "unknown notebook"),
])
def test_bad_report_parameters_are_refused(tmp_path, capsys, yaml_text, message):
    cfg = tmp_path / "params.yaml"
    cfg.write_text(yaml_text)
    assert main(["report", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "signgd-lab"
    assert exe.exists()
    res = subprocess.run([str(exe), "report", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--timestamps" in res.stdout


def test_rendered_page_is_offline_with_a_back_link(tmp_path):
    """A small executed notebook (markdown formulas, a plotly figure) renders with nothing
    loaded from the network, a link back to the index and its formulas as text."""
    import nbformat
    import plotly.graph_objects as go

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "# Page\n\nstep η<sub>t</sub> = lr<sub>0</sub> γ<sup>t−1</sup>"))
    cell = nbformat.v4.new_code_cell("fig")
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"text/html": fig.to_html(include_plotlyjs=True, full_html=False)})]
    nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "page.ipynb")
    render_html(tmp_path / "page.ipynb", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert_offline_and_readable(page)
    assert "γ<sup>t−1</sup>" in page and page.count('href="index.html"') == 2
    assert "<title>Page</title>" in page  # the notebook's heading, not "Notebook"
    assert "Plotly.newPlot" in page and "fig" not in visible_text(page).split()  # no code
    # the check itself catches what it must
    assert external_resources('<script src="https://cdn.example/x.js"></script>')
    assert RAW_MATH.search(visible_text("<p>$\\hat x_t$</p>"))


def test_import_is_lazy():
    """``import signgd_lab`` and ``signgd-lab --help`` load neither torch nor timm,
    torchvision or scikit-learn."""
    code = """
import json, sys
import signgd_lab
after_import = [m for m in ("torch", "timm", "torchvision", "sklearn") if m in sys.modules]
from signgd_lab.cli import main
try:
    main(["report", "--help"])
except SystemExit:
    pass
after_help = [m for m in ("torch", "timm", "torchvision", "sklearn") if m in sys.modules]
import signgd_lab as sl
sl.simulate_neuron
after_use = [m for m in ("timm", "torchvision", "sklearn") if m in sys.modules]
print(json.dumps([after_import, after_help, after_use, "torch" in sys.modules]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    after_import, after_help, after_use, torch_loaded = json.loads(res.stdout.splitlines()[-1])
    assert after_import == [] and after_help == [] and after_use == []
    assert torch_loaded  # a name is imported when it is used


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("argv,message", [
    (["--param", "02.T=0"], "02_signgd_nonlinearities: T=0: 0 is outside [1, 100000]"),
    (["--param", "02.TARGETS=max"], "target 'max' takes 2 input(s)"),
    (["--param", "02.TARGETS=exp,foo"], "unknown target 'foo'"),
    (["--param", "01.SCHEDULE=cosine"], "is not one of inverse, constant, inverse_sqrt"),
    (["--param", "01.T=16", "--param", "01.LOSS_STEPS=1,32"], "32 is outside [1, T=16]"),
    (["--param", "01.X=abc"], "X expects float"),
    (["--param", "02.NOPE=1"], "02_signgd_nonlinearities has no parameter(s) NOPE"),
    (["--param", "03.INTERACTIVE=true"], "set by the report itself"),
    (["--param", "03.SCATTER_T=5"], "5 must be one of TIMESTAMPS"),
    (["--param", "07.T=5"], "unknown notebook '07'"),
    (["--models", "digits_cnn,foo"], "unknown model(s) 'foo'"),
    (["--model", "no_such_arch"], "MODEL='no_such_arch': unknown model"),
    (["--model", "missing_dir/model.pt"], "model file missing_dir/model.pt does not exist"),
    (["--data", "/no/such/folder"], "data '/no/such/folder' does not exist"),
    (["--device", "cuda"], "CUDA is not available"),
])
def test_bad_parameters_exit_2_before_anything_runs(tmp_path, capsys, monkeypatch, argv, message):
    if "cuda" in argv and _cuda():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    import signgd_lab.report as report

    monkeypatch.setattr(report, "run_report", lambda *a, **k: pytest.fail("the report ran"))
    assert main(["report", "--out", str(tmp_path / "r"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_malformed_param_flag_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--param", "02.T"])
    assert exit_.value.code == 2 and "expected NOTEBOOK.NAME=VALUE" in capsys.readouterr().err


def test_every_notebook_parameter_is_reachable_and_typed(tmp_path, capsys, monkeypatch):
    """--param, per-notebook --config sections and the general flags reach the notebooks,
    typed by each notebook's parameters cell; --param wins; defaults that depend on T follow T."""
    import signgd_lab.report as report

    seen = {}
    monkeypatch.setattr(report, "run_report",
                        lambda config, out, log: seen.update(config.check()))
    cfg = tmp_path / "params.yaml"
    cfg.write_text("timestamps: [8, 64]\n02:\n  T: 300\n  TARGETS: [exp]\n"
                   "01_neuron_as_optimizer:\n  SCHEDULE: polynomial\n")
    assert main(["report", "--config", str(cfg), "--param", "02.TARGETS=exp,gelu",
                 "--param", "01.T=16", "--param", "03.SAMPLES=100", "--param", "04.MODES=paper"]) == 0
    assert seen["02_signgd_nonlinearities"]["T"] == 300
    assert seen["02_signgd_nonlinearities"]["TARGETS"] == ["exp", "gelu"]  # --param wins
    assert seen["02_signgd_nonlinearities"]["T_LIST"] == [8, 64]  # general flag
    assert seen["01_neuron_as_optimizer"]["SCHEDULE"] == "polynomial"
    assert seen["01_neuron_as_optimizer"]["T"] == 16 and seen["01_neuron_as_optimizer"]["LOSS_STEPS"] == []
    assert seen["03_conversion_debugger"]["SAMPLES"] == 100 and seen["03_conversion_debugger"]["SCATTER_T"] == 0
    assert seen["04_accuracy_vs_timesteps"]["MODES"] == ["paper"]
    # every schedule the package has is selectable in 01
    from signgd_lab.dynamics.schedules import SCHEDULE_KINDS
    from signgd_lab.notebook_params import parameter_specs

    assert set(parameter_specs("01_neuron_as_optimizer")["SCHEDULE"].choices) == set(SCHEDULE_KINDS)


def test_every_parameter_has_rules():
    """Each notebook parameter states its range, choices or provider (INTERACTIVE,
    METRICS_PATH and free-text LAYER aside), so the CLI can check it before running."""
    from signgd_lab.notebook_params import parameter_specs

    free = {"INTERACTIVE", "METRICS_PATH", "LAYER"}
    for name in NOTEBOOKS:
        for spec in parameter_specs(name).values():
            if spec.name in free:
                continue
            assert (spec.low is not None or spec.high is not None or spec.choices or spec.provider
                    or spec.member_of or spec.has_auto), f"{name}: {spec.name} has no rule"
