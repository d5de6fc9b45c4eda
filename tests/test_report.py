"""`signgd-lab report`: the rendered report, its numbers, the browser view, failures, CLI."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from signgd_lab.cli import build_parser, main
from signgd_lab.report import NOTEBOOKS, ReportConfig, ReportError, run_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "reports"
    lines = []
    run_report(ReportConfig().quick(), out, log=lines.append)
    return out, lines


def metrics(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.metrics.json").read_text())


@pytest.mark.notebook
def test_report_has_every_notebook_and_progress(report):
    out, lines = report
    for name in NOTEBOOKS:
        page = (out / f"{name}.html").read_text()
        assert "data:image/png;base64" in page
        assert "import signgd_lab as sl" not in page and "METRICS_PATH =" not in page  # no code
        assert f"{name}.html" in (out / "index.html").read_text()
        assert any(line.startswith("[") and name in line and "done" in line for line in lines)
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


CHECK = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const imgs = [...document.images];
  document.body.setAttribute('data-check', JSON.stringify({
    images: imgs.length, decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    plots: document.querySelectorAll('.js-plotly-plot').length,
    drawn: document.querySelectorAll('.js-plotly-plot svg.main-svg').length}));
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
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        found = re.search(r'data-check="([^"]*)"', dom)
        assert found, f"{name}: the check script did not run"
        check = json.loads(found.group(1).replace("&quot;", '"'))
        assert check["images"] >= 1 and check["decoded"] == check["images"], (name, check)
        assert check["drawn"] >= check["plots"], (name, check)
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


def test_help_documents_every_flag():
    parser = build_parser()
    report_parser = parser._subparsers._group_actions[0].choices["report"]
    text = report_parser.format_help()
    for action in report_parser._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.option_strings
    for flag in ("--model", "--timestamps", "--seed", "--device", "--samples", "--config", "--list-models"):
        assert flag in text


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
