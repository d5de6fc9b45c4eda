"""Conversion passes. Each takes a GraphModule and returns a new one (the input is not changed),
ending with ``graph.lint()`` and ``recompile()``."""
from .calibration import calibrate, collect_batches
from .fuse_bn import fuse_conv_bn
from .rewrite import (decompose_attention, decompose_layernorm, decompose_maxpool,
                      prepare_composites, replace_nonlinearities)
from .scaling import scale_activations
from .support import find_unsupported
from .weight_modules import weight_modules

__all__ = [
    "calibrate", "collect_batches", "decompose_attention", "decompose_layernorm",
    "decompose_maxpool", "find_unsupported", "fuse_conv_bn", "prepare_composites",
    "replace_nonlinearities", "scale_activations", "weight_modules",
]
