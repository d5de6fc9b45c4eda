"""The ``signgd-lab`` command line: ``signgd-lab report [flags]``.

Arguments are parsed and every parameter is checked before anything runs; torch, timm and the
data are imported only when a command needs them, so ``--help`` and argument errors are fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import NOTEBOOKS


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _param(text: str) -> tuple[str, str, str]:
    """``NB.NAME=VALUE`` -> (notebook, NAME, VALUE); the value is typed by the notebook's
    parameters cell later."""
    key, eq, value = text.partition("=")
    notebook, dot, name = key.partition(".")
    if not (eq and dot and notebook.strip() and name.strip()):
        raise argparse.ArgumentTypeError(
            f"expected NOTEBOOK.NAME=VALUE (e.g. 02.T=300 or 02.TARGETS=exp,gelu), got {text!r}")
    return notebook.strip(), name.strip(), value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag documented in --help)."""
    parser = argparse.ArgumentParser(prog="signgd-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "report", help="execute the notebooks and render an HTML report",
        description="Execute the notebooks headlessly with papermill (INTERACTIVE=False), render "
                    "each to self-contained HTML without code, and write OUT/index.html. Flags "
                    "override values from --config. A failed or interrupted run leaves the "
                    "previous report untouched.")
    rep.add_argument("--out", default="reports", help="output folder (default: reports)")
    rep.add_argument("--config", type=Path, help="YAML file with any of the keys below "
                     "(model, dynamics, models, timestamps, seed, device, samples, "
                     "calibration_samples, notebooks) and per-notebook sections of notebook "
                     "parameters, e.g. '\"02\": {T: 300, TARGETS: [exp, gelu]}'")
    rep.add_argument("--param", type=_param, action="append", default=[], metavar="NB.NAME=VALUE",
                     help="set any parameter of one notebook, e.g. 02.T=300 or "
                     "02.TARGETS=exp,gelu (lists are comma-separated); repeatable; checked "
                     "against the notebook's parameters cell (see --list-params); wins over "
                     "the general flags and --config")
    rep.add_argument("--list-params", action="store_true",
                     help="list every notebook parameter with its type, range and default, "
                     "and exit")
    rep.add_argument("--model", help="model of the conversion debugger: a zoo name (see "
                     "--list-models) or a timm architecture (random weights); default digits_cnn")
    rep.add_argument("--dynamics", choices=["paper", "extended", "if"],
                     help="conversion dynamics of the debugger (default paper)")
    rep.add_argument("--models", type=_str_list, help="comma-separated zoo models of the "
                     "accuracy-against-T notebook (default digits_cnn,digits_mlp,digits_attention)")
    rep.add_argument("--timestamps", type=_int_list, help="comma-separated time-steps, strictly "
                     "increasing (default 8,16,32,64,128,256)")
    rep.add_argument("--seed", type=int, help="torch seed (default 0)")
    rep.add_argument("--device", help="torch device, e.g. cpu or cuda (default cpu)")
    rep.add_argument("--samples", type=int, help="test inputs per model (default 200; the "
                     "conversion debugger uses at most 64 of them unless --param 03.SAMPLES=N)")
    rep.add_argument("--calibration-samples", type=int, dest="calibration_samples",
                     help="training inputs used for calibration (default 256)")
    rep.add_argument("--notebooks", type=_str_list, help="comma-separated notebooks to run, by "
                     f"name or number (default all: {', '.join(n[:2] for n in NOTEBOOKS)})")
    rep.add_argument("--quick", action="store_true", help="CI-sized run: time-steps 8,32,128, "
                     "32 samples, two models")
    rep.add_argument("--list-models", action="store_true",
                     help="list the models MODEL accepts and exit")
    return parser


def _list_models() -> None:
    from .zoo import get_entry, list_models

    print("zoo models (trained on scikit-learn digits by signgd_lab, cached):")
    for name in list_models():
        print(f"  {name:18s} {get_entry(name).description}")
    print("or any timm architecture name (pretrained=False, random weights), e.g. convnext_atto,"
          " mixer_s16_224, resmlp_12_224, vit_tiny_patch16_224 (see timm.list_models())")


def _list_params() -> None:
    from .notebook_params import parameter_specs

    for name in NOTEBOOKS:
        print(f"{name} (--param {name[:2]}.NAME=VALUE):")
        for spec in parameter_specs(name).values():
            if spec.name in ("INTERACTIVE", "METRICS_PATH"):
                continue
            print(f"  {spec.name:20s} {spec.describe()}; default {spec.default!r}\n"
                  f"  {'':20s} {spec.help}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``signgd-lab`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    """``signgd-lab report``: check every parameter, then run (2 = bad parameter, 1 = failed)."""
    from .report import ReportConfig, ReportError, run_report

    if args.list_models:
        _list_models()
        return 0
    if args.list_params:
        _list_params()
        return 0
    values = {}
    if args.config is not None:
        import yaml

        if not args.config.exists():
            print(f"error: config file {args.config} does not exist", file=sys.stderr)
            return 2
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            print(f"error: {args.config} must hold a mapping of parameter: value", file=sys.stderr)
            return 2
        values.update(loaded)
    for key in ("model", "dynamics", "models", "timestamps", "seed", "device", "samples",
                "calibration_samples", "notebooks"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    try:
        config = ReportConfig.from_mapping(values)
        if args.quick:
            config = config.quick()
        overrides: dict[str, dict[str, str]] = {}
        for notebook, name, value in args.param:
            overrides.setdefault(notebook, {})[name] = value
        config = config.with_params(overrides)
        config.check()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        run_report(config, args.out, log=lambda line: print(line, flush=True))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 130 if "interrupted" in str(err) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
