"""Conversion passes. Each takes a GraphModule and returns a new one (the input is not changed),
ending with ``graph.lint()`` and ``recompile()``."""
from .calibration import calibrate, collect_batches
from .fold_scales import fold_scales
from .fuse_bn import fuse_conv_bn
from .fuse_max_chains import fuse_max_chains
from .rewrite import (decompose_attention, decompose_layernorm, decompose_maxpool,
                      prepare_composites, replace_nonlinearities)
from .scaling import scale_activations
from .support import find_unsupported

__all__ = [
    "calibrate", "collect_batches", "decompose_attention", "decompose_layernorm",
    "decompose_maxpool", "find_unsupported", "fold_scales", "fuse_conv_bn", "fuse_max_chains", "prepare_composites",
    "replace_nonlinearities",
    "scale_activations",
]
