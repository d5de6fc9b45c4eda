"""HTML reports: execute the notebooks headlessly (papermill), render each to self-contained
HTML without code (nbconvert), write an index, and replace the previous report atomically."""
from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 900  # a cell running longer than this is treated as hung
NOTEBOOKS = ("01_neuron_as_optimizer", "02_signgd_nonlinearities", "03_conversion_debugger",
             "04_accuracy_vs_timesteps")
_QUICK = dict(timestamps=[8, 32, 128], samples=32, calibration_samples=128,
              models=["digits_cnn", "digits_mlp"])


class ReportError(RuntimeError):
    """A report run failed; the message says which notebook and cell, and where the partial
    output is. The previous report is left untouched."""


@dataclass
class ReportConfig:
    """Parameters of a report run (flags or a YAML file with the same keys).

    Attributes:
        model: the model of the conversion debugger (a zoo name or a timm architecture).
        dynamics: its conversion dynamics (``paper``, ``extended`` or ``if``).
        models: the zoo models of the accuracy-against-T notebook.
        timestamps: time-steps studied (strictly increasing positive integers).
        seed: torch seed (timm models' random weights).
        device: torch device (``cpu``, ``cuda``).
        samples: test inputs per model.
        calibration_samples: training inputs for calibration.
        notebooks: which notebooks to run (names or their two-digit prefixes).
    """

    model: str = "digits_cnn"
    dynamics: str = "paper"
    models: list[str] = field(default_factory=lambda: ["digits_cnn", "digits_mlp", "digits_attention"])
    timestamps: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256])
    seed: int = 0
    device: str = "cpu"
    samples: int = 200
    calibration_samples: int = 256
    notebooks: list[str] = field(default_factory=lambda: list(NOTEBOOKS))

    def __post_init__(self) -> None:
        expect = {"model": str, "dynamics": str, "device": str, "seed": int, "samples": int,
                  "calibration_samples": int}
        for key, typ in expect.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, typ):
                raise ValueError(f"report parameter '{key}' must be {typ.__name__}, got "
                                 f"{value!r} ({type(value).__name__})")
        for key in ("models", "notebooks", "timestamps"):
            value = getattr(self, key)
            inner = int if key == "timestamps" else str
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, inner) and not isinstance(v, bool) for v in value):
                raise ValueError(f"report parameter '{key}' must be a non-empty list of "
                                 f"{inner.__name__}, got {value!r}")
        if any(t <= 0 for t in self.timestamps) or sorted(set(self.timestamps)) != self.timestamps:
            raise ValueError(f"report parameter 'timestamps' must be strictly increasing positive "
                             f"integers, got {self.timestamps}")
        if self.samples < 1 or self.calibration_samples < 1:
            raise ValueError("report parameters 'samples' and 'calibration_samples' must be >= 1")
        if self.dynamics not in ("paper", "extended", "if"):
            raise ValueError(f"report parameter 'dynamics' must be paper, extended or if, got "
                             f"{self.dynamics!r}")
        self.notebooks = [_notebook_name(n) for n in self.notebooks]

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "ReportConfig":
        """Build from a dict (e.g. parsed YAML); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown report parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def quick(self) -> "ReportConfig":
        """CI-sized variant: fewer time-steps, samples and models."""
        return ReportConfig(**{**asdict(self), **_QUICK})

    def notebook_parameters(self, name: str) -> dict[str, Any]:
        """The papermill parameters of one notebook."""
        scatter_t = next((t for t in self.timestamps if t >= 64), self.timestamps[-1])
        return {
            "01_neuron_as_optimizer": dict(T_LIST=self.timestamps),
            "02_signgd_nonlinearities": dict(T_LIST=self.timestamps),
            "03_conversion_debugger": dict(
                MODEL=self.model, DYNAMICS=self.dynamics, TIMESTAMPS=self.timestamps,
                SAMPLES=min(self.samples, 64), CALIBRATION_SAMPLES=self.calibration_samples,
                SCATTER_T=scatter_t, SEED=self.seed, DEVICE=self.device),
            "04_accuracy_vs_timesteps": dict(
                MODELS=self.models, T_LIST=self.timestamps, SAMPLES=self.samples,
                CALIBRATION_SAMPLES=self.calibration_samples, SEED=self.seed, DEVICE=self.device),
        }[name]


def _notebook_name(name: str) -> str:
    for nb in NOTEBOOKS:
        if name in (nb, f"{nb}.ipynb", nb[:2]):
            return nb
    raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)} (or 01..04)")


def versions() -> dict[str, str]:
    """Versions of the software that produced a report."""
    import numpy
    import papermill
    import timm
    import torch

    from . import __version__

    return {"signgd_lab": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "papermill": papermill.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}


def render_html(notebook_path: Path, html_path: Path) -> None:
    """Render an executed notebook to HTML without code cells or prompts."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    # require.js (from a CDN) would make plotly's bundle register as an AMD module instead of
    # window.Plotly; nothing in our reports needs it, so the page loads without it.
    body = re.sub(r'<script src="[^"]*require(\.min)?\.js"></script>\s*', "", body)
    html_path.write_text(body, encoding="utf-8")


def _index(config: ReportConfig, results: list[dict], started: str, vers: dict[str, str]) -> str:
    params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                     for k, v in asdict(config).items())
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in vers.items())
    items = "".join(
        f"<li><a href=\"{r['name']}.html\">{html.escape(r['name'])}</a> "
        f"({r['seconds']:.1f} s; <a href=\"{r['name']}.metrics.json\">metrics</a>)</li>"
        for r in results)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>signgd_lab report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style>
</head><body>
<h1>signgd_lab report</h1>
<p>Generated {html.escape(started)} by <code>signgd-lab report</code>.</p>
<h2>Notebooks</h2><ol id="notebooks">{items}</ol>
<h2>Parameters</h2><table id="parameters">{params}</table>
<h2>Versions</h2><table id="versions">{rows}</table>
</body></html>
"""


def _kernel_name() -> str:
    """A Jupyter kernel that runs this Python (and so this signgd_lab)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        argv0 = spec.argv[0]
        if argv0 in ("python", "python3", "{python}") or Path(argv0).resolve() == Path(sys.executable).resolve():
            return "python3"
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(prefix=sys.prefix, kernel_name="signgd-lab")
    return "signgd-lab"


def run_report(config: ReportConfig, out: str | os.PathLike,
               log: Callable[[str], None] = print) -> Path:
    """Execute the configured notebooks and write the report to ``out``.

    Everything is written to a staging folder next to ``out`` first; only a complete run
    replaces ``out``. On failure a :class:`ReportError` names the notebook and cell, and the
    staging folder (with the partial output) is kept and named.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    staging = out.parent / f".{out.name}.partial-{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    staging.mkdir()
    kernel = _kernel_name()
    results = []
    total = len(config.notebooks)
    for i, name in enumerate(config.notebooks, 1):
        log(f"[{i}/{total}] {name} ...")
        t0 = time.perf_counter()
        params = {**config.notebook_parameters(name), "INTERACTIVE": False,
                  "METRICS_PATH": str(staging / f"{name}.metrics.json")}
        executed = staging / f"{name}.ipynb"
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(executed),
                                       parameters=params, kernel_name=kernel, cwd=str(staging),
                                       progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
        except PapermillExecutionError as err:
            raise ReportError(
                f"notebook {name}.ipynb failed in cell {err.cell_index} (execution count "
                f"{err.exec_count}): {err.ename}: {err.evalue}\n"
                f"partial output kept in {staging}; the previous report in {out} is untouched"
            ) from err
        except KeyboardInterrupt:
            raise ReportError(f"interrupted during {name}.ipynb; partial output kept in "
                              f"{staging}; the previous report in {out} is untouched") from None
        except Exception as err:  # dead kernel, missing kernel, I/O
            raise ReportError(
                f"notebook {name}.ipynb could not run: {type(err).__name__}: {err}\n"
                f"partial output kept in {staging}; the previous report in {out} is untouched"
            ) from err
        render_html(executed, staging / f"{name}.html")
        seconds = time.perf_counter() - t0
        results.append({"name": name, "seconds": seconds})
        log(f"[{i}/{total}] {name} done in {seconds:.1f} s")
    vers = versions()
    (staging / "index.html").write_text(_index(config, results, started, vers), encoding="utf-8")
    (staging / "report.json").write_text(json.dumps(
        {"parameters": asdict(config), "versions": vers, "started": started,
         "notebooks": results}, indent=2))
    _swap_in(staging, out)
    log(f"report written to {out / 'index.html'}")
    return out


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (rename-based, so a reader never sees a half report)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
