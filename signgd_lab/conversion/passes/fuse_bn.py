"""Fold eval-mode BatchNorm into the preceding Conv / Linear (docs/theory.md, section 4, step 2)."""
from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..graph_utils import finish, module_of, propagate_shapes

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
          (nn.Linear, nn.BatchNorm1d))


def _rank(node: fx.Node) -> int | None:
    meta = node.meta.get("tensor_meta")
    return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def fuse_conv_bn(gm: fx.GraphModule, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Return a copy of ``gm`` where every BatchNorm that directly follows a Conv (or a Linear
    feeding BatchNorm1d on 2-D input) used only there is folded into that layer's weight and
    bias. Layers are matched by exact type (a subclass may compute more). BatchNorm1d after a
    Linear on 3-D input normalises dim 1, not the Linear's features: it is left as it is, as
    is any Linear + BatchNorm1d whose input rank is unknown (pass ``example`` to know it)."""
    gm = copy.deepcopy(gm)
    if example is not None:
        propagate_shapes(gm, example)
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if type(bn) not in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) or \
                not bn.track_running_stats or bn.running_mean is None:
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or len(prev.users) != 1:
            continue
        layer = module_of(gm, prev)
        if not any(type(layer) is a and type(bn) is b for a, b in _PAIRS):
            continue
        if type(layer) is nn.Linear and _rank(node) != 2:
            continue
        fuse = fuse_linear_bn_eval if type(layer) is nn.Linear else fuse_conv_bn_eval
        fused = fuse(layer.eval(), bn.eval())
        parent, _, attr = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    return finish(gm)
