"""Fold eval-mode BatchNorm into the preceding Conv / Linear (THEORY.md section 4, step 2)."""
from __future__ import annotations

import copy

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..graph_utils import finish, module_of

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d),
          (nn.Linear, nn.BatchNorm1d))


def fuse_conv_bn(gm: fx.GraphModule) -> fx.GraphModule:
    """Return a copy of ``gm`` where every BatchNorm that directly follows a Conv (or a Linear
    feeding BatchNorm1d) used only there is folded into that layer's weight and bias."""
    gm = copy.deepcopy(gm)
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        prev = node.args[0]
        if not isinstance(prev, fx.Node) or len(prev.users) != 1:
            continue
        layer = module_of(gm, prev)
        if not any(isinstance(layer, a) and isinstance(bn, b) for a, b in _PAIRS):
            continue
        fuse = fuse_linear_bn_eval if isinstance(layer, nn.Linear) else fuse_conv_bn_eval
        fused = fuse(layer.eval(), bn.eval())
        parent, _, attr = prev.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    return finish(gm)
