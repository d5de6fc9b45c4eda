"""ANN-to-SNN conversion: tracing, passes, op-handler registry, spiking executor."""
from .convert import DYNAMICS_PRESETS, convert, count_nonlinear, resolve_dynamics
from .errors import ConversionError
from .handlers import (AffineOp, OpHandler, list_handlers, register_affine, register_handler)
from .network import SpikingNetwork
from .probe import Probe
from .timestamps import check_timestamps
from .neuron_ops import MatmulNeuronOp, NeuronOp
from .recipes import RECIPES, Recipe, get_recipe, list_recipes
from .tracer import LeafTracer, trace

__all__ = [
    "AffineOp", "ConversionError", "DYNAMICS_PRESETS", "LeafTracer", "MatmulNeuronOp",
    "NeuronOp", "OpHandler", "Probe", "RECIPES", "Recipe", "SpikingNetwork", "check_timestamps",
    "convert", "count_nonlinear", "get_recipe", "list_handlers", "list_recipes",
    "register_affine", "register_handler", "resolve_dynamics", "trace",
]
