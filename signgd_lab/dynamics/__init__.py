"""Neuron dynamics: step-size schedules, target nonlinearities, neurons, codec, simulation."""
from .codec import DirectEncoder, DirectSignGDEncoder, FloatEncoder, RateDecoder, SignGDDecoder
from .config import IFDynamics, SignGDDynamics
from .neurons import IFNeuron, NeuronState, SignGDNeuron
from .schedules import SCHEDULE_KINDS, Schedule, check_steps
from .simulate import Trajectory, simulate_if_neuron, simulate_neuron
from .targets import Target, get_target, list_targets, register_target, unregister_target

__all__ = [
    "DirectEncoder", "DirectSignGDEncoder", "FloatEncoder", "IFDynamics", "IFNeuron", "NeuronState", "RateDecoder",
    "SCHEDULE_KINDS", "Schedule", "SignGDDecoder", "SignGDDynamics", "SignGDNeuron", "Target",
    "Trajectory", "check_steps", "get_target", "list_targets", "register_target",
    "simulate_if_neuron", "simulate_neuron", "unregister_target",
]
