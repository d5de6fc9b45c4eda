"""signgd_lab: explore sign-gradient-descent neuronal dynamics and ANN-to-SNN conversion.

Quick tour::

    import signgd_lab as sl
    tr = sl.simulate_neuron("gelu", torch.linspace(-1, 1, 101), T=64)     # teaching API
    model, (x_tr, y_tr), (x_te, y_te) = sl.zoo.load("digits_cnn")           # embedded models
    snn = sl.convert(model, x_tr[:256], dynamics="paper")                   # ANN -> SNN
    logits = snn(x_te, timestamps=[8, 64])                                  # (2, N, 10)
    table = sl.layer_errors(model, snn, x_te[:64], [8, 64])                 # where it departs

Names are imported on first use (PEP 562), so ``import signgd_lab`` and ``signgd-lab --help``
load neither torch nor timm, torchvision or scikit-learn.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(("ConversionError", "Recipe", "SpikingNetwork", "convert", "count_nonlinear",
                     "list_handlers", "list_recipes"), "conversion"),
    **dict.fromkeys(("IFDynamics", "Schedule", "SignGDDynamics", "Target", "Trajectory",
                     "get_target", "list_targets", "register_target", "simulate_if_neuron",
                     "simulate_neuron"), "dynamics"),
    **dict.fromkeys(("DebugRun", "LayerErrorTable", "SpikeStats", "TraceProbe", "debug_run",
                     "layer_errors", "spike_stats", "spike_stats_over_T"), "probes"),
    **dict.fromkeys(("EvaluationResult", "evaluate"), "evaluation"),
}
_SUBMODULES = ("conversion", "dynamics", "evaluation", "experiments", "notebook_params", "probes",
               "report", "viz", "zoo")

__all__ = sorted([*_EXPORTS, "zoo"])


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'signgd_lab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import zoo
    from .conversion import (ConversionError, Recipe, SpikingNetwork, convert, count_nonlinear,
                             list_handlers, list_recipes)
    from .dynamics import (IFDynamics, Schedule, SignGDDynamics, Target, Trajectory, get_target,
                           list_targets, register_target, simulate_if_neuron, simulate_neuron)
    from .evaluation import EvaluationResult, evaluate
    from .probes import (DebugRun, LayerErrorTable, SpikeStats, TraceProbe, debug_run,
                         layer_errors, spike_stats, spike_stats_over_T)
