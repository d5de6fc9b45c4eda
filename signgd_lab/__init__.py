"""signgd_lab: explore sign-gradient-descent neuronal dynamics and ANN-to-SNN conversion."""
from .conversion import ConversionError, SpikingNetwork, convert
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

__version__ = "0.1.0"

__all__ = [
    "ConversionError", "SpikingNetwork", "convert", "IFDynamics", "Schedule", "SignGDDynamics", "Target", "Trajectory", "get_target",
    "list_targets", "register_target", "simulate_if_neuron", "simulate_neuron",
]
