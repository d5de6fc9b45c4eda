"""Simulation-only pass: each max-pooling chain becomes one :class:`MaxChainOp`.

The max-pool decomposition (docs/theory.md, section 4, step 3) writes each axis of a k x k pool
as k strided windows of one tensor and k - 1 pairwise max neurons in a chain. Simulated node by
node, every window is copied out of its strided layout and every intermediate spike train goes
through memory; as one op, the runtime runs the chain in one kernel that reads the windows in
place (same arithmetic, see :func:`signgd_lab.dynamics.kernels.max_chain_steps`). The converted
graph keeps the decomposed form, which is what users, probes and the correction passes see.
"""
from __future__ import annotations

import operator

from torch import fx

from ..graph_utils import finish, module_of, shallow_copy, unique_attr
from ..neuron_ops import MaxChainOp, NeuronOp


def _window(node: object, source: fx.Node | None = None) -> tuple | None:
    """(source, index) of a single-use ``source[index]`` node, else None."""
    if not (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target is operator.getitem and len(node.users) == 1):
        return None
    y, index = node.args
    if not isinstance(y, fx.Node) or source is not None and y is not source:
        return None
    return y, index


def _max_neuron(gm: fx.GraphModule, node: object) -> NeuronOp | None:
    """The unscaled max-pool neuron ``node`` calls with two inputs, else None."""
    module = module_of(gm, node) if isinstance(node, fx.Node) else None
    if isinstance(module, NeuronOp) and len(node.args) == 2 and module.role == "max-pool" and \
            module.target.kernel == "max" and module.input_scale is None:
        return module
    return None


def fuse_max_chains(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule sharing ``gm``'s modules in which every chain of max-pool neurons over
    windows of one tensor is a :class:`MaxChainOp`; ``gm`` is not changed."""
    gm = shallow_copy(gm)
    erased: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node in erased or _max_neuron(gm, node) is None:
            continue
        first, second = _window(node.args[0]), _window(node.args[1])
        if first is None or second is None or first[0] is not second[0]:
            continue
        y = first[0]
        chain, windows, getitems = [node], [first[1], second[1]], [node.args[0], node.args[1]]
        while len(chain[-1].users) == 1:
            user = next(iter(chain[-1].users))
            if _max_neuron(gm, user) is None or user.args[0] is not chain[-1]:
                break
            window = _window(user.args[1], y)
            if window is None:
                break
            chain.append(user)
            windows.append(window[1])
            getitems.append(user.args[1])
        name = unique_attr(gm, f"{chain[0].target}_chain")
        gm.add_submodule(name, MaxChainOp([module_of(gm, n) for n in chain], windows))
        with gm.graph.inserting_before(chain[-1]):
            fused = gm.graph.call_module(name, (y,))
        fused.meta = dict(chain[-1].meta)
        chain[-1].replace_all_uses_with(fused)
        for dead in [*reversed(chain), *getitems]:
            gm.graph.erase_node(dead)
            erased.add(dead)
    return finish(gm)
