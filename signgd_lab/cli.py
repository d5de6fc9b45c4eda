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
                     "(model, data, dynamics, models, timestamps, seed, device, samples, "
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
                     "--list-models), a timm architecture (random weights), timm:NAME, "
                     "module.path:factory (imported from the working directory); default "
                     "digits_cnn")
    rep.add_argument("--data", help="data of the conversion debugger: digits (default), an "
                     "image folder (DIR/train + DIR/val, or one tree of class folders), "
                     "torchvision:NAME:ROOT (already downloaded) or a .pt file holding (x, y)")
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
    _add_evaluate_parser(sub)
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
    return _evaluate(args) if args.command == "evaluate" else _report(args)


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
    for key in ("model", "data", "dynamics", "models", "timestamps", "seed", "device", "samples",
                "calibration_samples", "notebooks"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    _anchor_specs(values)
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


def _anchor_specs(values: dict) -> None:
    """The notebooks run in the report's staging folder: make relative model and data paths
    absolute, and let the kernel import ``module:factory`` specs from this working directory
    (PYTHONPATH, which the notebook kernels inherit)."""
    import os

    for key in ("model", "data"):
        spec = values.get(key)
        if isinstance(spec, str) and not Path(spec).is_absolute() and Path(spec).exists():
            values[key] = str(Path(spec).resolve())
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.getcwd() not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *paths])


_EVALUATE_KEYS = ("model", "data", "dynamics", "timestamps", "calibration_samples", "batch_size",
                  "device", "out", "seed", "pretrained", "weights", "trust_model_file",
                  "image_size", "mean", "std", "workers", "append", "save_network", "restart",
                  "limit")


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate", help="accuracy of the converted network over a whole data set at several T",
        description="Convert a model once, then measure ANN and SNN top-1 (top-5 with more than "
                    "10 classes) at every T over the whole evaluation split, from one anytime "
                    "run per batch; writes OUT/results.json and OUT/results.md. Under torchrun "
                    "(--nproc-per-node N, or several nodes) the batches are shared by the "
                    "processes and the counts summed (gloo on CPU, nccl on CUDA). A killed run "
                    "restarted with the same arguments continues where it stopped.")
    ev.add_argument("--model", help="a zoo name, timm:NAME, module.path:factory (imported from "
                    "the working directory), a file written by torch.save(model) (needs "
                    "--trust-model-file) or a network saved by --save-network")
    ev.add_argument("--data", help="digits (default); an image folder (DIR/train + DIR/val, or one "
                    "tree of class folders); torchvision:NAME:ROOT (already downloaded); a .pt "
                    "file holding (x, y)")
    ev.add_argument("--dynamics", choices=["paper", "extended", "if"], help="default paper")
    ev.add_argument("--timestamps", type=_int_list, help="comma-separated T, strictly increasing "
                    "(default 8,32,128)")
    ev.add_argument("--calibration-samples", type=int, dest="calibration_samples",
                    help="training samples drawn (seeded) for calibration (default 256)")
    ev.add_argument("--batch-size", type=int, dest="batch_size", help="default 64")
    ev.add_argument("--device", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK); default cpu")
    ev.add_argument("--out", help="output folder (default: evaluation)")
    ev.add_argument("--config", type=Path, help="YAML file with any of the flags as keys "
                    "(underscores: calibration_samples, batch_size, ...); flags win")
    ev.add_argument("--seed", type=int, help="seed of the calibration sample and of random "
                    "initialisations (default 0)")
    ev.add_argument("--pretrained", action="store_true", default=None,
                    help="timm models: timm's pretrained weights (hub or local cache)")
    ev.add_argument("--weights", help="state dict (.pt/.pth, loaded with weights_only=True) or "
                    ".safetensors file for the model")
    ev.add_argument("--trust-model-file", action="store_true", default=None,
                    dest="trust_model_file", help="allow loading a pickled model file (this "
                    "runs code stored in the file)")
    ev.add_argument("--image-size", type=int, dest="image_size",
                    help="resize/crop images to this size (default: the model's config)")
    ev.add_argument("--mean", type=_float_list, help="per-channel mean, e.g. 0.485,0.456,0.406")
    ev.add_argument("--std", type=_float_list, help="per-channel std, e.g. 0.229,0.224,0.225")
    ev.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    ev.add_argument("--append", help="also append the results as one JSON line to this file")
    ev.add_argument("--save-network", dest="save_network",
                    help="save the converted network here (evaluate it again with --model FILE "
                    "--trust-model-file, without calibration)")
    ev.add_argument("--restart", action="store_true", default=None,
                    help="ignore partial counts of an earlier interrupted run")
    ev.add_argument("--limit", type=int, help="evaluate only the first N samples (quick runs)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate(args: argparse.Namespace) -> int:
    """``signgd-lab evaluate``: 2 = bad arguments or spec, 1 = failed, 0 = done."""
    values: dict = {}
    if args.config is not None:
        import yaml

        if not args.config.exists():
            print(f"error: config file {args.config} does not exist", file=sys.stderr)
            return 2
        loaded = yaml.safe_load(args.config.read_text()) or {}
        unknown = sorted(set(loaded) - set(_EVALUATE_KEYS)) if isinstance(loaded, dict) else None
        if unknown is None or unknown:
            print(f"error: {args.config} must hold a mapping with keys among "
                  f"{', '.join(_EVALUATE_KEYS)}" + (f"; unknown: {unknown}" if unknown else ""),
                  file=sys.stderr)
            return 2
        values.update(loaded)
    values.update({k: getattr(args, k) for k in _EVALUATE_KEYS if getattr(args, k) is not None})
    if not values.get("model"):
        print("error: --model is required (or model: in --config)", file=sys.stderr)
        return 2
    values.setdefault("out", "evaluation")
    import os

    from .conversion import ConversionError
    from .evaluation import evaluate
    from .zoo.errors import SpecError

    try:
        result = evaluate(**values, progress=not args.no_progress)
    except (SpecError, ConversionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.markdown(), flush=True)
        print(f"written to {values['out']}/results.json and results.md", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
