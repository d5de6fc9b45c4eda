"""Model specs: one string names a model everywhere (API, ``signgd-lab report`` and ``evaluate``).

- a zoo name (``digits_cnn``): trained by our own code, cached;
- ``timm:NAME`` (or a bare timm architecture name): random weights (seeded), timm's own
  pretrained loading with ``pretrained=True``, or a weights file;
- ``module.path:factory``: the user's own code, imported from the working directory, called
  with no arguments;
- a file written by ``torch.save(model)`` (or :meth:`SpikingNetwork.save`): unpickling runs
  code from the file, so it is loaded only with ``trust_model_file=True``.

Weights files (``weights=``) are state dicts (loaded with ``torch.load(weights_only=True)``) or
safetensors files; they need no trust flag.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SpecError
from .registry import ZooEntry, get_entry, list_models, load

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module")


@dataclass
class LoadedModel:
    """A model named by a spec, in eval mode.

    Attributes:
        spec: the spec it was loaded from.
        model: the module (a :class:`~signgd_lab.SpikingNetwork` for a saved converted network).
        kind: ``zoo``, ``timm``, ``factory`` or ``file``.
        source: one line saying where the weights came from.
        zoo_entry: the zoo entry of a zoo model (its image size), else None.
        data_config: timm's data config of the model (``input_size``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ...) when known: timm models, and networks saved by
            ``signgd-lab evaluate --save-network``; else None.
    """

    spec: str
    model: nn.Module
    kind: str
    source: str
    zoo_entry: ZooEntry | None = None
    data_config: dict[str, Any] | None = None


def load_model(spec: str, pretrained: bool = False, weights: str | os.PathLike | None = None,
               trust_model_file: bool = False, seed: int = 0) -> LoadedModel:
    """The model named by ``spec`` (see the module docstring), in eval mode on the CPU.

    Args:
        spec: zoo name, ``timm:NAME``, ``module.path:factory`` or a model file.
        pretrained: timm models only: load timm's pretrained weights (from the Hugging Face
            hub or timm's local cache).
        weights: a state dict (``.pt``/``.pth``, loaded with ``weights_only=True``) or a
            ``.safetensors`` file loaded into the model (every key must fit).
        trust_model_file: allow unpickling a whole model from a file (runs code from it).
        seed: torch seed of random initialisations (timm without weights, factories); the
            caller's random state is left as it was.

    Raises:
        SpecError: unknown name, missing file, import failure, a factory that does not return a
            module, weights that do not fit, an untrusted pickled model.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if pretrained and weights is not None:
        raise SpecError("pass either pretrained=True (--pretrained) or weights (--weights), "
                        "not both")
    with torch.random.fork_rng(devices=[]):  # seeds initialisations, not the caller's state
        torch.manual_seed(seed)
        if spec in list_models():
            loaded = _zoo(spec, pretrained)
        elif spec.startswith("timm:"):
            loaded = _timm(spec, spec[5:], pretrained)
        elif _looks_like_file(spec):
            loaded = _model_file(spec, trust_model_file, pretrained)
        elif _FACTORY.match(spec):
            loaded = _factory(spec, pretrained)
        else:
            loaded = _bare_timm_name(spec, pretrained)
    if weights is not None:
        if loaded.kind == "file":
            raise SpecError(f"{spec} is a whole saved model; --weights applies to zoo, timm and "
                            "module:factory specs")
        load_weights(loaded.model, weights)
        loaded.source = f"{loaded.source}, weights from {weights}"
    loaded.model.eval()
    return loaded


def check_model_spec(spec: str) -> None:
    """Check ``spec`` without loading anything heavy (for parameter checks before a run):
    a zoo name, a timm architecture (``timm:NAME`` or bare), an existing model file, or a
    ``module.path:factory`` whose module can be found. Raises :class:`SpecError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec in list_models():
        return
    if spec.startswith("timm:") or not (_looks_like_file(spec) or _FACTORY.match(spec)):
        import timm

        name = spec[5:] if spec.startswith("timm:") else spec
        if not timm.is_model(name):
            raise SpecError(f"unknown model {spec!r}: not a zoo model ({', '.join(list_models())}),"
                            " not a timm architecture (timm.list_models()), not an existing model "
                            "file and not a module.path:factory spec")
    elif _looks_like_file(spec):
        if not Path(spec).is_file():
            raise SpecError(f"model file {spec} does not exist")
    else:
        module = spec.split(":", 1)[0]
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise SpecError(f"cannot find module {module!r} of model spec {spec!r} (searched the "
                            f"working directory {cwd} and sys.path)")


def _looks_like_file(spec: str) -> bool:
    return os.path.sep in spec or spec.endswith(_MODEL_FILE_SUFFIXES) or Path(spec).is_file()


def _zoo(name: str, pretrained: bool) -> LoadedModel:
    if pretrained:
        raise SpecError(f"--pretrained applies to timm models; zoo model {name!r} is trained "
                        "by signgd_lab itself (its weights are always used)")
    model = load(name)[0]
    return LoadedModel(name, model, "zoo", "zoo (trained on digits by signgd_lab, cached)",
                       zoo_entry=get_entry(name))


def _bare_timm_name(spec: str, pretrained: bool) -> LoadedModel:
    import timm

    if spec not in timm.list_models():
        raise SpecError(
            f"unknown model {spec!r}: not a zoo model ({', '.join(list_models())}), not a timm "
            "architecture (timm.list_models()), not an existing model file and not a "
            "module.path:factory spec")
    return _timm(spec, spec, pretrained)


def _timm(spec: str, name: str, pretrained: bool) -> LoadedModel:
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise SpecError(f"timm has no architecture {name!r} (see timm.list_models()){hint}")
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as err:  # hub unreachable, no cached file, ...
        if not pretrained:
            raise SpecError(f"timm could not create {name!r}: {err}") from err
        raise SpecError(
            f"could not load timm's pretrained weights for {name!r}: {type(err).__name__}: {err}. "
            "timm downloads them from the Hugging Face hub or reads its local cache; on a "
            "machine without network, download them once elsewhere, or pass a weights file "
            "(--weights FILE)") from err
    source = "timm, pretrained weights" if pretrained else "timm, random weights (seeded)"
    return LoadedModel(spec, model.eval(), "timm", source,
                       data_config=dict(resolve_data_config({}, model=model)))


def _factory(spec: str, pretrained: bool) -> LoadedModel:
    if pretrained:
        raise SpecError("--pretrained applies to timm models; give your factory's weights with "
                        "--weights FILE or load them inside the factory")
    module_name, attr = spec.split(":", 1)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SpecError(f"cannot import module {module_name!r} of model spec {spec!r} "
                        f"(searched the working directory {cwd} and sys.path): {err}") from err
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise SpecError(f"module {module_name!r} has no attribute {attr!r} (model spec "
                            f"{spec!r}); name a function that returns the model")
        factory = getattr(factory, part)
    if not callable(factory):
        raise SpecError(f"{spec} is a {type(factory).__name__}, not a callable; name a function "
                        "that returns the model")
    try:
        model = factory()
    except Exception as err:
        raise SpecError(f"the factory {spec} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise SpecError(f"the factory {spec} returned a {type(model).__name__}, not a "
                        "torch.nn.Module; it must return the model")
    return LoadedModel(spec, model, "factory", f"factory {spec}")


def _model_file(spec: str, trust: bool, pretrained: bool) -> LoadedModel:
    path = Path(spec)
    if not path.is_file():
        raise SpecError(f"model file {spec} does not exist")
    if pretrained:
        raise SpecError("--pretrained applies to timm models, not to a model file")
    if not trust:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise SpecError(
                f"{spec} holds a pickled model. Loading it (torch.load(weights_only=False)) runs "
                "code stored in the file, so signgd_lab does it only when you say you trust the "
                "file: pass --trust-model-file (trust_model_file=True in Python). A state dict "
                "or safetensors file needs no flag: give a model spec and --weights FILE") from None
        raise SpecError(f"{spec} holds weights only (a state dict), not a model: give the "
                        f"architecture as the model spec (timm:NAME, module:factory, a zoo name) "
                        f"and this file with --weights {spec}")
    cwd = os.getcwd()
    if cwd not in sys.path:  # the classes of a pickled model are imported by name
        sys.path.insert(0, cwd)
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise SpecError(f"could not load the model in {spec}: {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        hint = " (it looks like a state dict: pass it with --weights)" \
            if isinstance(model, dict) else ""
        raise SpecError(f"{spec} holds a {type(model).__name__}, not a torch.nn.Module{hint}")
    config = getattr(model, "data_config", None)
    return LoadedModel(spec, model, "file", f"model file {spec} ({type(model).__name__})",
                       data_config=dict(config) if isinstance(config, dict) else None)


def load_weights(model: nn.Module, weights: str | os.PathLike) -> None:
    """Load a state dict or safetensors file into ``model`` (in place); every key and shape
    must fit. Checkpoints that wrap the state dict (``{"state_dict": ...}``, ``{"model": ...}``)
    and DDP's ``module.`` prefix are unwrapped."""
    path = Path(weights)
    if not path.is_file():
        raise SpecError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as err:
            raise SpecError(f"{path} is not a readable safetensors file: {err}") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise SpecError(
                f"{path} is not a weights file loadable with torch.load(weights_only=True) "
                f"({type(err).__name__}); save model.state_dict(), or a safetensors file. A "
                "whole pickled model is a model spec (with --trust-model-file), not --weights"
            ) from None
    for key in _CHECKPOINT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict) and not any(
                isinstance(v, torch.Tensor) for v in state.values()):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"{path} does not hold a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing from the file", missing),
                             ("not in the model", unexpected), ("of the wrong shape", wrong)):
            if items:
                more = f", ... ({len(items)} in all)" if len(items) > 4 else ""
                parts.append(f"{len(items)} {label} ({', '.join(items[:4])}{more})")
        raise SpecError(f"the weights in {path} do not fit {type(model).__name__}: "
                        f"{'; '.join(parts)}")
    model.load_state_dict(state)
