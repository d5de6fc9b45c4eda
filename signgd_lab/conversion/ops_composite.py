"""Modules that are several ops in one, split into their parts before BatchNorm folding
(stage ``prepare``):

* timm's ``BatchNormAct2d`` (a ``BatchNorm2d`` subclass that also applies dropout and an
  activation) -> a plain ``BatchNorm2d`` with its statistics, its ``drop`` and its ``act``
  module (the activation then becomes neurons like any other);
* max-pooling with ``ceil_mode=True`` -> replicate-padding of the last row / column (exact:
  a copy of an edge value never changes a window's maximum) and a pool without ceil_mode.
"""
from __future__ import annotations

import copy
import math

import torch.nn.functional as F
from torch import fx, nn

from .graph_utils import Emitter, module_of, node_shape
from .decompositions import pair, pool_args
from .handlers import OpHandler, register_handler
from .recipes import Recipe


def _batchnorm_act(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    bn = nn.BatchNorm2d(mod.num_features, mod.eps, mod.momentum, mod.affine,
                        mod.track_running_stats)
    bn.load_state_dict({k: v for k, v in mod.state_dict().items()
                        if k in bn.state_dict()}, strict=False)
    bn.eval()
    y = emit.module(f"{node.target}_bn", bn, emit.proxy(node.args[0]))
    y = emit.call(f"{node.target}.drop", y)
    return emit.call(f"{node.target}.act", y)


def _ceil_mode(gm: fx.GraphModule, node: fx.Node) -> bool:
    return bool(pool_args(gm, node)["ceil_mode"])


def _extra(size: int, k: int, s: int, p: int) -> int:
    """Rows to add at the end so that the floor-mode pool has torch's ceil-mode output size."""
    out = math.ceil((size + 2 * p - k) / s) + 1
    if (out - 1) * s >= size + p:  # torch drops a last window that starts in the padding
        out -= 1
    return max(0, (out - 1) * s + k - (size + 2 * p))


def _maxpool_ceil(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    p = pool_args(emit.gm, node)
    (kh, kw), (sh, sw), (ph, pw) = (pair(p["kernel_size"]), pair(p["stride"]),
                                    pair(p["padding"]))
    h, w = node_shape(node.args[0])[-2:]
    x = F.pad(emit.proxy(node.args[0]), (0, _extra(w, kw, sw, pw), 0, _extra(h, kh, sh, ph)),
              mode="replicate")
    pool = nn.MaxPool2d((kh, kw), (sh, sw), (ph, pw), p["dilation"], False, p["return_indices"])
    return emit.module(f"{node.name}_floor", pool, x)


def _register() -> None:
    register_handler(OpHandler("batchnorm_act", "prepare", _batchnorm_act,
                               "BatchNorm2d, dropout, then the activation's neurons",
                               modules=("timm.layers.BatchNormAct2d",)))
    register_handler(OpHandler("max_pool2d_ceil", "prepare", _maxpool_ceil,
                               "replicate-pad the edge, then max-pooling without ceil_mode",
                               (nn.MaxPool2d,), (F.max_pool2d,), applies=_ceil_mode))


_register()
