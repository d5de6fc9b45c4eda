"""Activation scaling (THEORY.md section 4, step 7): x / m -> neuron -> * m."""
from __future__ import annotations

import copy

import torch
from torch import fx

from ..graph_utils import finish, unique_attr


def scale_activations(gm: fx.GraphModule, maxima: dict[str, torch.Tensor]) -> fx.GraphModule:
    """Return a copy of ``gm`` where each neuron named in ``maxima`` sees its input divided by
    the elementwise maximum m and its output multiplied by m (exact for positively homogeneous
    targets such as ReLU, so the ANN is unchanged while the neuron works in about [0, 1])."""
    gm = copy.deepcopy(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in maxima:
            continue
        name = unique_attr(gm, f"{node.target}_scale")
        gm.register_buffer(name, maxima[node.target].clone())
        with gm.graph.inserting_before(node):
            m = gm.graph.get_attr(name)
            scaled = gm.graph.call_function(torch.div, (node.args[0], m))
        node.args = (scaled,) + tuple(node.args[1:])
        with gm.graph.inserting_after(node):
            out = gm.graph.call_function(torch.mul, (node, m))
        node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    return finish(gm)
