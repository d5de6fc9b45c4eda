"""Simulation-only pass: fold ``x / m -> neuron -> * m'`` into one :class:`FoldedNeuronOp`.

The scaling pass (docs/theory.md, section 4, step 7) surrounds neurons with an elementwise division
and multiplication by calibrated constants. In a simulation these are two extra passes over the
largest tensors of the network at every step; folded, the neuron kernel divides each current
and multiplies each spike (a spike is 0 or 1, so ``s * m'`` is ``m'`` or ``0 * m'``, exactly
what ``torch.mul`` gives). The converted graph itself keeps the unfolded form, which is what
users, probes and the correction passes see.
"""
from __future__ import annotations

import operator

import torch
from torch import fx

from ..graph_utils import attr_tensor, finish, module_of, shallow_copy, unique_attr
from ..neuron_ops import FoldedNeuronOp, MatmulNeuronOp, NeuronOp

_DIV = (torch.div, operator.truediv)
_MUL = (torch.mul, operator.mul)


def fold_scales(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule computing the same as ``gm`` in which every one-input neuron fed only
    by ``x / constant`` and read only by ``* constant`` is a :class:`FoldedNeuronOp`. The
    neuron modules are shared with ``gm`` (not copied); ``gm`` is not changed."""
    folded = shallow_copy(gm)
    for node in list(folded.graph.nodes):
        neuron = module_of(folded, node)
        if not isinstance(neuron, NeuronOp) or isinstance(neuron, MatmulNeuronOp) or \
                len(node.args) != 1 or node.kwargs:
            continue
        div, users = node.args[0], list(node.users)
        if not (isinstance(div, fx.Node) and div.op == "call_function" and div.target in _DIV
                and len(div.args) == 2 and not div.kwargs and len(div.users) == 1
                and len(users) == 1 and users[0].op == "call_function" and users[0].target in _MUL
                and len(users[0].args) == 2 and users[0].args[0] is node and not users[0].kwargs):
            continue
        mul = users[0]
        divisor, multiplier = attr_tensor(folded, div.args[1]), attr_tensor(folded, mul.args[1])
        if divisor is None or multiplier is None:
            continue
        name = unique_attr(folded, f"{node.target}_folded")
        folded.add_submodule(name, FoldedNeuronOp(neuron, divisor, multiplier))
        with folded.graph.inserting_before(mul):
            new = folded.graph.call_module(name, (div.args[0],))
        new.meta = dict(node.meta)
        mul.replace_all_uses_with(new)
        for dead in (mul, node, div):
            folded.graph.erase_node(dead)
    return finish(folded)
