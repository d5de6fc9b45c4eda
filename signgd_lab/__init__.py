"""signgd_lab: explore sign-gradient-descent neuronal dynamics and ANN-to-SNN conversion.

Quick tour::

    import signgd_lab as sl
    tr = sl.simulate_neuron("gelu", torch.linspace(-1, 1, 101), T=64)     # teaching API
    model, (x_tr, y_tr), (x_te, y_te) = sl.zoo.load("digits_cnn")           # embedded models
    snn = sl.convert(model, x_tr[:256], dynamics="paper")                   # ANN -> SNN
    logits = snn(x_te, timestamps=[8, 64])                                  # (2, N, 10)
    table = sl.layer_errors(model, snn, x_te[:64], [8, 64])                 # where it departs
"""
from . import zoo
from .conversion import (ConversionError, Recipe, SpikingNetwork, convert, count_nonlinear,
                         list_handlers, list_recipes)
from .dynamics import (
    IFDynamics,
    Schedule,
    SignGDDynamics,
    Target,
    Trajectory,
    get_target,
    list_targets,
    register_target,
    simulate_if_neuron,
    simulate_neuron,
)
from .probes import (LayerErrorTable, SpikeStats, TraceProbe, layer_errors, spike_stats,
                     spike_stats_over_T)

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "IFDynamics", "LayerErrorTable", "Recipe", "Schedule", "SignGDDynamics",
    "SpikeStats", "SpikingNetwork", "Target", "TraceProbe", "Trajectory", "convert",
    "count_nonlinear", "get_target", "layer_errors", "list_handlers", "list_recipes",
    "list_targets", "register_target", "simulate_if_neuron", "simulate_neuron", "spike_stats",
    "spike_stats_over_T", "zoo",
]
