"""Notebook parameters: read a notebook's annotated ``parameters`` cell and check values against it.

Each line of a parameters cell is ``NAME = literal  # help [rules]``. The literal gives the type
(``int``, ``float``, ``str``, ``bool`` or a list of one of them) and the default; the optional
bracket at the end of the comment holds comma-separated rules:

- ``lo..hi``: inclusive range (either end may be omitted; an end may name another parameter,
  e.g. ``1..T``); for a list it applies to every element.
- ``a|b|c``: the allowed values.
- ``@targets``, ``@unary_targets``, ``@binary_targets``, ``@zoo``, ``@model``, ``@data``,
  ``@device``: values checked against what the package provides (targets registered, zoo
  models, model specs, data specs, torch devices that exist here).
- ``in NAME``: the value must be one of the list parameter ``NAME``.
- ``increasing``: a list must be strictly increasing.
- ``auto V``: the value ``V`` means "derive it from the others" and skips the other rules
  (e.g. ``auto []``, ``auto 0``).

A parameter line holds one ``=`` only (papermill skips lines with more), so rules and help
text avoid ``=``.
- ``int`` / ``float`` / ``str``: element type of a list whose default is empty.

:func:`check_parameters` is what the CLI (before anything runs) and each notebook (in its first
code cell, so raw papermill gets the same messages) call.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
_RULES = re.compile(r"\[((?:[^\[\]]|\[\])*)\]\s*$")  # may hold "[]" (auto [])
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class ParamSpec:
    """One notebook parameter: name, default, type and the rules of its comment."""

    name: str
    default: Any
    kind: str  # int, float, str, bool
    is_list: bool
    help: str
    low: str | None = None
    high: str | None = None
    choices: tuple[str, ...] = ()
    provider: str | None = None
    member_of: str | None = None
    increasing: bool = False
    auto: Any = None
    has_auto: bool = False

    def describe(self) -> str:
        """A short human description: type, range, choices."""
        kind = f"list of {self.kind}" if self.is_list else self.kind
        parts = [kind]
        if self.low is not None or self.high is not None:
            parts.append(f"in [{self.low if self.low is not None else '-inf'}, "
                         f"{self.high if self.high is not None else 'inf'}]")
        if self.choices:
            parts.append("one of " + ", ".join(self.choices))
        if self.provider:
            parts.append(_PROVIDER_HELP[self.provider])
        if self.member_of:
            parts.append(f"one of {self.member_of}")
        if self.increasing:
            parts.append("strictly increasing")
        if self.has_auto:
            parts.append(f"{self.auto!r} means automatic")
        return ", ".join(parts)


_PROVIDER_HELP = {
    "targets": "a registered target (signgd_lab.list_targets())",
    "unary_targets": "a one-input target (signgd_lab.list_targets())",
    "binary_targets": "a two-input target (signgd_lab.list_targets())",
    "zoo": "a zoo model (signgd-lab report --list-models)",
    "model": "a model spec: a zoo model, a timm architecture (NAME or timm:NAME), "
             "module.path:factory or a model file (signgd-lab report --list-models)",
    "data": "a data spec: digits, an image folder, torchvision:NAME:ROOT or a .pt file (x, y)",
    "device": "a torch device available here (cpu, or cuda when CUDA is available)",
}


def notebook_path(name: str) -> Path:
    """Path of the repository notebook ``name`` (stem, with or without .ipynb)."""
    path = NOTEBOOK_DIR / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not path.exists():
        raise ValueError(f"notebook {path} not found (the notebooks ship with the source "
                         "checkout; install signgd_lab with `pip install -e .`)")
    return path


def parameter_specs(name: str) -> dict[str, ParamSpec]:
    """The parameters of notebook ``name``, parsed from its cell tagged ``parameters``."""
    nb = json.loads(notebook_path(name).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{name}: expected one cell tagged 'parameters', found {len(cells)}")
    source = cells[0]["source"]
    lines = source.splitlines() if isinstance(source, str) else "".join(source).splitlines()
    specs = {}
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec = _parse_line(name, line)
        specs[spec.name] = spec
    return specs


def _parse_line(notebook: str, line: str) -> ParamSpec:
    code, _, comment = line.partition("#")
    target, _, literal = code.partition("=")
    pname = target.strip()
    try:
        default = ast.literal_eval(literal.strip())
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{notebook}: parameter line {line!r} is not NAME = literal") from err
    rules = _RULES.search(comment)
    clauses = [c.strip() for c in rules.group(1).split(",")] if rules else []
    is_list = isinstance(default, list)
    sample = default[0] if is_list and default else default
    kind = next((c for c in clauses if c in _TYPES), None)
    if kind is None:
        if is_list and not default:
            raise ValueError(f"{notebook}: {pname} has an empty default; name its element type "
                             "([int], [float] or [str]) in the comment")
        kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(sample)]
    fields: dict[str, Any] = {}
    for clause in clauses:
        if clause in _TYPES:
            continue
        if clause == "increasing":
            fields["increasing"] = True
        elif clause.startswith("@"):
            if clause[1:] not in _PROVIDER_HELP:
                raise ValueError(f"{notebook}: {pname}: unknown rule {clause!r}")
            fields["provider"] = clause[1:]
        elif clause.startswith("in "):
            fields["member_of"] = clause[3:].strip()
        elif clause.startswith("auto "):
            fields["auto"] = ast.literal_eval(clause[5:].strip())
            fields["has_auto"] = True
        elif ".." in clause:
            lo, hi = (s.strip() or None for s in clause.split("..", 1))
            fields["low"], fields["high"] = lo, hi
        elif "|" in clause:
            fields["choices"] = tuple(c.strip() for c in clause.split("|"))
        else:
            raise ValueError(f"{notebook}: {pname}: unknown rule {clause!r}")
    help_text = _RULES.sub("", comment).strip()
    return ParamSpec(pname, default, kind, is_list, help_text, **fields)


def parse_value(spec: ParamSpec, value: Any) -> Any:
    """Coerce ``value`` (a command-line string, a YAML value, a papermill value) to the
    parameter's type; raises ValueError naming the parameter and what it expects."""
    if spec.has_auto and value == spec.auto:
        return value
    if spec.is_list:
        if isinstance(value, str) and value.strip().startswith(("[", "(")):
            value = value.strip()[1:-1]  # "[8, 32]": the brackets of a list literal
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        return [_scalar(spec, v) for v in items]
    return _scalar(spec, value)


def _scalar(spec: ParamSpec, value: Any) -> Any:
    want = f"{spec.name} expects {spec.describe()}"
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{want}, got {value!r}")
    if spec.kind == "str":
        if isinstance(value, str):
            return value
        raise ValueError(f"{want}, got {value!r} ({type(value).__name__})")
    if isinstance(value, bool):
        raise ValueError(f"{want}, got {value!r}")
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"{want}, got {value!r}") from None
    if spec.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{want}, got {value!r}")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{want}, got {value!r}")
    return float(value)


def check_parameters(name: str, values: dict[str, Any], providers: bool = True) -> dict[str, Any]:
    """Check the parameters of notebook ``name`` and return them coerced to their types.

    ``values`` may hold any subset (missing ones take their defaults) and other keys (e.g. a
    notebook's ``globals()``, which are ignored). Raises ValueError naming the parameter, the
    value and what is allowed; checks cross-parameter rules (``1..T``, ``in TIMESTAMPS``).
    Types, ranges and choices are checked first; the ``@`` rules (which import torch or
    look models up) last, and only with ``providers=True``.
    """
    specs = parameter_specs(name)
    out = {k: parse_value(s, values.get(k, s.default)) for k, s in specs.items()}
    for spec in specs.values():
        _check_rules(name, spec, out[spec.name], out)
    if providers:
        for spec in specs.values():
            if spec.provider and not (spec.has_auto and out[spec.name] == spec.auto):
                items = out[spec.name] if spec.is_list else [out[spec.name]]
                _check_provider(f"{name}: {spec.name}={out[spec.name]!r}", spec.provider, items)
    return out


def unknown_parameters(name: str, keys: list[str]) -> list[str]:
    """The keys that are not parameters of notebook ``name``."""
    specs = parameter_specs(name)
    return [k for k in keys if k not in specs]


def _bound(text: str | None, values: dict[str, Any]) -> float | None:
    if text is None:
        return None
    if text in values:
        bound = values[text]
        return max(bound) if isinstance(bound, list) else bound
    return float(text)


def _check_rules(notebook: str, spec: ParamSpec, value: Any, values: dict[str, Any]) -> None:
    if spec.has_auto and value == spec.auto:
        return
    where = f"{notebook}: {spec.name}={value!r}"
    items = value if spec.is_list else [value]
    if spec.is_list and not items:
        raise ValueError(f"{where}: must not be empty ({spec.describe()})")
    lo, hi = _bound(spec.low, values), _bound(spec.high, values)
    for item in items:
        if (lo is not None and item < lo) or (hi is not None and item > hi):
            raise ValueError(f"{where}: {item!r} is outside [{spec.low or '-inf'}"
                             f"{'=' + str(lo) if spec.low in values else ''}, "
                             f"{spec.high or 'inf'}{'=' + str(hi) if spec.high in values else ''}]")
        if spec.choices and item not in spec.choices:
            raise ValueError(f"{where}: {item!r} is not one of {', '.join(spec.choices)}")
        if spec.member_of and item not in values[spec.member_of]:
            raise ValueError(f"{where}: {item!r} must be one of {spec.member_of}="
                             f"{values[spec.member_of]!r}")
    if spec.increasing and any(b <= a for a, b in zip(items, items[1:])):
        raise ValueError(f"{where}: must be strictly increasing")


def _check_provider(where: str, provider: str, items: list[Any]) -> None:
    if provider == "device":
        for item in items:
            _check_device(where, item)
        return
    if provider in ("model", "data"):
        from .zoo.datasets import check_data_spec
        from .zoo.model_spec import check_model_spec

        for item in items:
            try:
                (check_model_spec if provider == "model" else check_data_spec)(item)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return
    if provider == "zoo":
        from .zoo.registry import list_models

        zoo = list_models()
        missing = [i for i in items if i not in zoo]
        if missing:
            raise ValueError(f"{where}: unknown model(s) {', '.join(map(repr, missing))}; "
                             f"zoo models: {', '.join(zoo)} (signgd-lab report --list-models)")
        return
    from .dynamics.targets import get_target, list_targets

    names = list_targets()
    for item in items:
        if item not in names:
            raise ValueError(f"{where}: unknown target {item!r}; registered: {', '.join(names)}")
        arity = get_target(item).arity
        if provider == "unary_targets" and arity != 1 or provider == "binary_targets" and arity != 2:
            raise ValueError(f"{where}: target {item!r} takes {arity} input(s); this parameter "
                             f"takes {'one' if provider == 'unary_targets' else 'two'}-input targets")


def _check_device(where: str, device: str) -> None:
    if device == "cpu":  # no need to import torch for the default
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{where}: not a torch device ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: CUDA is not available on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{where}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: device type {dev.type!r} is not supported; use cpu or cuda")
