"""The staged rewrites: every node matched by a registered handler of the stage is replaced by
the handler's decomposition (see :mod:`signgd_lab.conversion.handlers`)."""
from __future__ import annotations

import copy

import torch
from torch import fx

from ..graph_utils import Emitter, dynamic_nodes, finish, is_shape_node, propagate_shapes
from ..handlers import handlers_for
from ..recipes import Recipe


def apply_stage(gm: fx.GraphModule, stage: str, recipe: Recipe,
                example: torch.Tensor | None = None) -> fx.GraphModule:
    """Return a copy of ``gm`` with every input-dependent node of ``stage`` rewritten.

    The set of input-dependent nodes is updated after every rewrite with the nodes it emitted,
    so an op whose operand was itself just replaced by neurons (``gelu(a) * sigmoid(b)``) is
    still seen as acting on input-dependent values. ``example`` (one input batch) is needed by rewrites that read
    shapes (max-pooling, SDPA, max trees).
    """
    gm = copy.deepcopy(gm)
    if example is not None:
        propagate_shapes(gm, example)
    handlers = handlers_for(stage)
    dynamic = dynamic_nodes(gm.graph)
    for node in list(gm.graph.nodes):
        if node not in dynamic or node.graph is not gm.graph:
            continue
        handler = next((h for h in handlers if h.matches(gm, node, dynamic)), None)
        if handler is None:
            continue
        before, after = node.prev, node.next
        with Emitter(gm, node) as emit:
            result = handler.rewrite(emit, node, recipe)
            if result is not None:
                emit.replace(result)
        if getattr(after, "_erased", False):  # the handler rewired the users itself
            dynamic = dynamic_nodes(gm.graph)
            continue
        new = before.next
        while new is not after:  # the emitted nodes, in order
            if not is_shape_node(new) and any(a in dynamic for a in new.all_input_nodes):
                dynamic.add(new)
            new = new.next
    return finish(gm)


def prepare_composites(gm: fx.GraphModule, recipe: Recipe, example: torch.Tensor) -> fx.GraphModule:
    """Modules that are several ops in one (timm BatchNormAct2d: BatchNorm, dropout, activation;
    max-pooling with ceil_mode) -> their parts, before BatchNorm folding."""
    return apply_stage(gm, "prepare", recipe, example)


def decompose_attention(gm: fx.GraphModule, recipe: Recipe, example: torch.Tensor) -> fx.GraphModule:
    """timm Attention, nn.MultiheadAttention, F.scaled_dot_product_attention -> neurons."""
    return apply_stage(gm, "attention", recipe, example)


def decompose_layernorm(gm: fx.GraphModule, recipe: Recipe,
                        example: torch.Tensor | None = None) -> fx.GraphModule:
    """nn.LayerNorm (timm LayerNorm, LayerNorm2d), F.layer_norm, GroupNorm, InstanceNorm,
    F.normalize -> square / rsqrt_div neurons (``example`` gives the shapes GroupNorm needs)."""
    return apply_stage(gm, "layernorm", recipe, example)


def decompose_maxpool(gm: fx.GraphModule, recipe: Recipe, example: torch.Tensor) -> fx.GraphModule:
    """nn.MaxPool2d, F.max_pool2d -> chains of pairwise max neurons."""
    return apply_stage(gm, "maxpool", recipe, example)


def replace_nonlinearities(gm: fx.GraphModule, recipe: Recipe,
                           example: torch.Tensor | None = None) -> fx.GraphModule:
    """Every remaining elementwise / bilinear nonlinearity -> its neuron (``example`` gives
    the shapes that a max-subtracted softmax needs)."""
    return apply_stage(gm, "neuron", recipe, example)
