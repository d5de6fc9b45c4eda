"""Neurons whose inputs merge the batch with another dim get the samples back on dim 0.

Swin's window attention runs on (B * windows, ...) tensors. The spiking runtime keeps one
neuron state per sample row of dim 0 (time steps are stacked on it too), so a neuron there
would see windows where it expects samples. Around such a neuron this pass writes
``x.unflatten(0, (-1, k))`` (B, k, ...) before and ``.flatten(0, 1)`` after: the same values,
with one row per sample. ``k`` (rows per sample) is read from shapes at two batch sizes.
"""
from __future__ import annotations

import copy

import torch
from torch import fx

from ..graph_utils import batch_dims, dynamic_nodes, finish, module_of
from ..neuron_ops import NeuronOp


def _rows_per_sample(node: fx.Node) -> int | None:
    """k when dim 0 holds k > 1 rows per sample (None otherwise)."""
    k = node.meta.get("rows_per_sample")
    return k if k is not None and k > 1 else None


def separate_samples(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """Return a copy of ``gm`` where every neuron whose input-dependent inputs all hold k > 1
    rows per sample on dim 0 sees them as (samples, k, ...) (see the module docstring)."""
    gm = copy.deepcopy(gm)
    batch_dims(gm, example)
    dynamic = dynamic_nodes(gm.graph)
    for node in list(gm.graph.nodes):
        if not isinstance(module_of(gm, node), NeuronOp):
            continue
        inputs = [a for a in node.args if isinstance(a, fx.Node)]
        ks = {_rows_per_sample(a) for a in inputs}
        if len(ks) != 1 or None in ks or not all(a in dynamic for a in inputs):
            continue
        k = ks.pop()
        with gm.graph.inserting_before(node):
            node.args = tuple(gm.graph.call_method("unflatten", (a, 0, (-1, k)))
                              if isinstance(a, fx.Node) else a for a in node.args)
        with gm.graph.inserting_after(node):
            out = gm.graph.call_method("flatten", (node, 0, 1))
        out.meta["rows_per_sample"] = k  # what the neuron's readers saw before
        dynamic.add(out)
        node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    return finish(gm)
