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

from .notebook_params import NOTEBOOK_DIR, check_parameters, parameter_specs

CELL_TIMEOUT_S = 900  # a cell running longer than this is treated as hung
NOTEBOOKS = ("01_neuron_as_optimizer", "02_signgd_nonlinearities", "03_conversion_debugger",
             "04_accuracy_vs_timesteps")
_QUICK = dict(timestamps=[8, 32, 128], samples=32, calibration_samples=128,
              models=["digits_cnn", "digits_mlp"])
DEBUGGER_SAMPLE_CAP = 64  # the debugger simulates every layer: it uses at most this many inputs
_SET_BY_REPORT = ("INTERACTIVE", "METRICS_PATH")
# the kernel's start-up warnings (e.g. "running over TCP without encryption" on a local socket)
# would otherwise reach the console of every report run
KERNEL_QUIET = ["--log-level=ERROR"]


class ReportError(RuntimeError):
    """A report run failed; the message says which notebook and cell, and where the partial
    output is. The previous report is left untouched."""


@dataclass
class ReportConfig:
    """Parameters of a report run (flags or a YAML file with the same keys).

    Attributes:
        model: the model of the conversion debugger (a model spec: zoo name, timm
            architecture, ``timm:NAME``, ``module.path:factory``).
        data: the debugger's data (a data spec: ``digits``, an image folder,
            ``torchvision:NAME:ROOT``, a ``.pt`` file).
        dynamics: its conversion dynamics (``paper``, ``extended`` or ``if``).
        models: the zoo models of the accuracy-against-T notebook.
        timestamps: time-steps studied (strictly increasing positive integers).
        seed: torch seed (timm models' random weights).
        device: torch device (``cpu``, ``cuda``).
        samples: test inputs per model.
        calibration_samples: training inputs for calibration.
        notebooks: which notebooks to run (names or their two-digit prefixes).
        params: per-notebook parameters, ``{"02_signgd_nonlinearities": {"T": 300}}``; they
            override what the general keys above set for that notebook. Every name, type,
            range and choice is checked against the notebook's parameters cell.
    """

    model: str = "digits_cnn"
    data: str = "digits"
    dynamics: str = "paper"
    models: list[str] = field(default_factory=lambda: ["digits_cnn", "digits_mlp", "digits_attention"])
    timestamps: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256])
    seed: int = 0
    device: str = "cpu"
    samples: int = 200
    calibration_samples: int = 256
    notebooks: list[str] = field(default_factory=lambda: list(NOTEBOOKS))
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expect = {"model": str, "data": str, "dynamics": str, "device": str, "seed": int,
                  "samples": int, "calibration_samples": int}
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
        if not isinstance(self.params, dict):
            raise ValueError(f"report parameter 'params' must map notebook -> {{NAME: value}}, "
                             f"got {self.params!r}")
        params: dict[str, dict[str, Any]] = {}
        for nb, values in self.params.items():
            name = _notebook_name(nb)
            if not isinstance(values, dict):
                raise ValueError(f"parameters of notebook {name} must be a mapping NAME: value, "
                                 f"got {values!r}")
            fixed = sorted(set(values) & set(_SET_BY_REPORT))
            if fixed:
                raise ValueError(f"{name}: {', '.join(fixed)} are set by the report itself")
            params.setdefault(name, {}).update(values)
        self.params = params

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "ReportConfig":
        """Build from a dict (e.g. parsed YAML); unknown keys are refused.

        A key naming a notebook (``02``, ``2`` or ``02_signgd_nonlinearities``) holds that
        notebook's own parameters (``{"02": {"T": 300, "TARGETS": ["exp"]}}``).
        """
        known = {f.name for f in fields(cls)}
        general, sections = {}, {}
        for key, value in values.items():
            if key in known:
                general[key] = value
            elif _is_notebook_key(key):
                sections[_notebook_name(key)] = value
            else:
                raise ValueError(f"unknown report parameter {key!r}; known: {sorted(known)}, or a "
                                 f"notebook section ({', '.join(n[:2] for n in NOTEBOOKS)})")
        merged = dict(general.get("params") or {})
        for name, section in sections.items():
            if not isinstance(section, dict):
                raise ValueError(f"section {name} must map NAME: value, got {section!r}")
            merged[name] = {**merged.get(name, {}), **section}
        general["params"] = merged
        return cls(**general)

    def with_params(self, overrides: dict[str | int, dict[str, Any]]) -> "ReportConfig":
        """A copy whose per-notebook parameters are updated by ``overrides`` (notebook -> values;
        a notebook may be named by its two-digit prefix)."""
        params = {name: dict(values) for name, values in self.params.items()}
        for notebook, values in overrides.items():
            params.setdefault(_notebook_name(notebook), {}).update(values)
        return ReportConfig(**{**asdict(self), "params": params})

    def check(self) -> dict[str, dict[str, Any]]:
        """Every selected notebook's parameters, checked against its parameters cell (names,
        types, ranges, choices, models, device) before anything runs. Raises ValueError."""
        checked = {}
        for providers in (False, True):  # the quick checks of every notebook first
            for name in self.notebooks:
                values = self.notebook_parameters(name)
                unknown = [k for k in values if k not in parameter_specs(name)]
                if unknown:
                    raise ValueError(f"{name} has no parameter(s) {', '.join(unknown)}; its "
                                     f"parameters: {', '.join(parameter_specs(name))}")
                checked[name] = check_parameters(name, values, providers)
        return checked

    def quick(self) -> "ReportConfig":
        """CI-sized variant: fewer time-steps, samples and models."""
        return ReportConfig(**{**asdict(self), **_QUICK})

    def notebook_parameters(self, name: str) -> dict[str, Any]:
        """The papermill parameters of one notebook: what the general keys set for it, then
        its own ``params`` (which win)."""
        general = {
            "01_neuron_as_optimizer": dict(T_LIST=self.timestamps),
            "02_signgd_nonlinearities": dict(T_LIST=self.timestamps),
            "03_conversion_debugger": dict(
                MODEL=self.model, DATA=self.data, DYNAMICS=self.dynamics,
                TIMESTAMPS=self.timestamps,
                SAMPLES=min(self.samples, DEBUGGER_SAMPLE_CAP),
                CALIBRATION_SAMPLES=self.calibration_samples, SEED=self.seed, DEVICE=self.device),
            "04_accuracy_vs_timesteps": dict(
                MODELS=self.models, T_LIST=self.timestamps, SAMPLES=self.samples,
                CALIBRATION_SAMPLES=self.calibration_samples, SEED=self.seed, DEVICE=self.device),
        }[name]
        return {**general, **self.params.get(name, {})}


def _is_notebook_key(key: Any) -> bool:
    try:
        _notebook_name(key)
    except ValueError:
        return False
    return True


def _notebook_name(name: str | int) -> str:
    if isinstance(name, int) and not isinstance(name, bool):
        name = f"{name:02d}"
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


_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- offline: no require.js, MathJax, mermaid or widget manager from a CDN (the notebooks write
    their formulas in plain text and HTML, and the report has no live widgets) -#}
{%- block html_head_js_requirejs -%}{%- endblock -%}
{%- block html_head_js_mathjax -%}{%- endblock -%}
{%- block html_head_js_mermaidjs -%}{%- endblock -%}
{%- block jupyter_widgets -%}{%- endblock -%}
{%- block extra_css -%}<style>nav.signgd-back{max-width:1100px;margin:1em auto;
font-family:sans-serif}</style>{%- endblock -%}
{%- block body_header -%}{{ super() }}
<nav class="signgd-back"><a href="index.html">&larr; back to the report index</a></nav>
{%- endblock -%}
{%- block body_footer -%}
<nav class="signgd-back"><a href="index.html">&larr; back to the report index</a></nav>
{{ super() }}{%- endblock -%}
"""
_EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""",
                       re.IGNORECASE)


def external_resources(page: str) -> list[str]:
    """The tags of an HTML page that load a script, stylesheet, image or frame from the network."""
    return [m.group(0) for m in _EXTERNAL.finditer(page)]


def render_html(notebook_path: Path, html_path: Path) -> None:
    """Render an executed notebook to self-contained HTML without code cells or prompts, with a
    link back to the index; nothing is loaded from the network (raises ReportError if the
    page would)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    heading = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    nb.metadata["title"] = next((line.lstrip("# ").strip() for line in heading.splitlines()
                                 if line.startswith("#")), notebook_path.stem)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True,
                            extra_loaders=[DictLoader({"signgd_report.html.j2": _TEMPLATE})],
                            template_file="signgd_report.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    external = external_resources(body)
    if external:
        raise ReportError(f"{notebook_path.name}: the rendered page would load {external[:3]} "
                          "from the network; reports must work offline")
    html_path.write_text(body, encoding="utf-8")


def notebook_summary(name: str) -> tuple[str, str]:
    """(title, one-line summary) of a notebook: its first heading and its metadata summary."""
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), name)
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("#")),
                 name)
    return title, nb.metadata.get("signgd_lab", {}).get("summary", "")


def _table(rows: dict[str, Any], table_id: str = "") -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows.items())
    return f'<table{f" id={table_id!r}" if table_id else ""}>{cells}</table>'


def _index(config: ReportConfig, results: list[dict], started: str, vers: dict[str, str]) -> str:
    items = "".join(
        f"<li><a href=\"{r['name']}.html\">{html.escape(r['title'])}</a> "
        f"<span class=\"summary\">{html.escape(r['summary'])}</span> "
        f"<small>({r['seconds']:.1f} s; <a href=\"{r['name']}.metrics.json\">metrics</a>)"
        f"</small><details><summary>parameters</summary>{_table(r['parameters'])}</details></li>"
        for r in results)
    general = {k: v for k, v in asdict(config).items() if k != "params"}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>signgd_lab report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
li{{margin-bottom:.8em}}.summary{{display:block;color:#444}}</style>
</head><body>
<h1>signgd_lab report</h1>
<p>Generated {html.escape(started)} by <code>signgd-lab report</code>. Each notebook lists the
parameters it ran with (the conversion debugger uses at most {DEBUGGER_SAMPLE_CAP} test inputs
unless <code>--param 03.SAMPLES=N</code> says otherwise).</p>
<h2>Notebooks</h2><ol id="notebooks">{items}</ol>
<h2>General parameters</h2>{_table(general, "parameters")}
<h2>Versions</h2>{_table(vers, "versions")}
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

    checked = config.check()  # every parameter of every notebook, before anything runs
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
        params = {**checked[name], "INTERACTIVE": False,
                  "METRICS_PATH": str(staging / f"{name}.metrics.json")}
        executed = staging / f"{name}.ipynb"
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(executed),
                                       parameters=params, kernel_name=kernel, cwd=str(staging),
                                       progress_bar=False, execution_timeout=CELL_TIMEOUT_S,
                                       extra_arguments=KERNEL_QUIET)
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
        title, summary = notebook_summary(name)
        shown = {k: v for k, v in params.items() if k not in _SET_BY_REPORT}
        results.append({"name": name, "title": title, "summary": summary, "seconds": seconds,
                        "parameters": shown})
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
