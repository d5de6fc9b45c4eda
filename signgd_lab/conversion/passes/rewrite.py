"""The staged rewrites: every node matched by a registered handler of the stage is replaced by
the handler's decomposition (see :mod:`signgd_lab.conversion.handlers`)."""
from __future__ import annotations

import copy

import torch
from torch import fx

from ..graph_utils import Emitter, dynamic_nodes, finish, module_of, propagate_shapes
from ..handlers import handlers_for
from ..recipes import Recipe


def is_inplace(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for ops that overwrite their first operand (``x.relu_()``, ``F.relu(x, True)``,
    ``nn.ReLU(inplace=True)``)."""
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (name.endswith("_") and not name.endswith("__")) or node.kwargs.get("inplace") is True \
            or any(a is True for a in node.args[1:])
    return bool(getattr(module_of(gm, node), "inplace", False))


def _readers_after(node: fx.Node, value: object, order: dict[fx.Node, int]) -> list[fx.Node]:
    if not isinstance(value, fx.Node):
        return []
    return [u for u in value.users if order.get(u, -1) > order[node]]


def apply_stage(gm: fx.GraphModule, stage: str, recipe: Recipe,
                example: torch.Tensor | None = None) -> fx.GraphModule:
    """Return a copy of ``gm`` with every input-dependent node of ``stage`` rewritten.

    ``example`` (one input batch) is needed by rewrites that read shapes (max-pooling, SDPA).
    """
    gm = copy.deepcopy(gm)
    if example is not None:
        propagate_shapes(gm, example)
    dynamic = dynamic_nodes(gm.graph)
    handlers = handlers_for(stage)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        if node not in dynamic or node.graph is not gm.graph:
            continue
        handler = next((h for h in handlers if h.matches(gm, node, dynamic)), None)
        if handler is None:
            continue
        # an in-place op overwrote its operand: later readers of it must read the result
        overwritten = node.args[0] if is_inplace(gm, node) else None
        readers = _readers_after(node, overwritten, order)
        with Emitter(gm, node) as emit:
            result = handler.rewrite(emit, node, recipe)
            if result is not None:
                emit.replace(result)
                for reader in readers:
                    reader.replace_input_with(overwritten, result.node)
    return finish(gm)


def decompose_attention(gm: fx.GraphModule, recipe: Recipe, example: torch.Tensor) -> fx.GraphModule:
    """timm Attention, nn.MultiheadAttention, F.scaled_dot_product_attention -> neurons."""
    return apply_stage(gm, "attention", recipe, example)


def decompose_layernorm(gm: fx.GraphModule, recipe: Recipe) -> fx.GraphModule:
    """nn.LayerNorm (timm LayerNorm, LayerNorm2d), F.layer_norm -> square / rsqrt_div neurons."""
    return apply_stage(gm, "layernorm", recipe)


def decompose_maxpool(gm: fx.GraphModule, recipe: Recipe, example: torch.Tensor) -> fx.GraphModule:
    """nn.MaxPool2d, F.max_pool2d -> chains of pairwise max neurons."""
    return apply_stage(gm, "maxpool", recipe, example)


def replace_nonlinearities(gm: fx.GraphModule, recipe: Recipe,
                           example: torch.Tensor | None = None) -> fx.GraphModule:
    """Every remaining elementwise / bilinear nonlinearity -> its neuron (``example`` gives
    the shapes that a max-subtracted softmax needs)."""
    return apply_stage(gm, "neuron", recipe, example)
