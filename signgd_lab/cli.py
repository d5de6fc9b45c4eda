"""The ``signgd-lab`` command line: ``signgd-lab report [flags]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import NOTEBOOKS, ReportConfig, ReportError, run_report


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


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
                     "calibration_samples, notebooks)")
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
    rep.add_argument("--samples", type=int, help="test inputs per model (default 200)")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``signgd-lab`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list_models:
        _list_models()
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
        if config.model:
            _check_model(config.model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        run_report(config, args.out, log=lambda line: print(line, flush=True))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 130 if "interrupted" in str(err) else 1
    return 0


def _check_model(name: str) -> None:
    from .zoo import list_models

    if name in list_models():
        return
    import timm

    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}; run `signgd-lab report --list-models`")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
