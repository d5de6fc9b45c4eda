"""Find every op that conversion cannot handle, so they can be reported all at once."""
from __future__ import annotations

from torch import fx

from ..affine import affine_violation
from ..graph_utils import describe, dynamic_nodes, module_of, op_name
from ..handlers import find_handler, user_affine_op
from ..neuron_ops import NeuronOp

_STEP = ("is a step function of its input: its output jumps, so no neuron's estimate can "
         "converge to it")
WHY_NOT_A_NEURON = {
    **{n: f"is a comparison, which {_STEP}" for n in ("gt", "lt", "ge", "le", "eq", "ne")},
    **{n: f"rounds to integers: it {_STEP}" for n in ("floor", "ceil", "round", "trunc",
                                                       "floordiv", "floor_divide", "mod",
                                                       "remainder", "sign")},
    **{n: "returns an order or indices of the input, not a function a neuron can approximate"
       for n in ("sort", "argsort", "topk", "argmax", "argmin", "kthvalue", "median")},
}
HINT = ("register a handler (signgd_lab.conversion.register_handler) if it is a nonlinearity, "
        "declare it glue (register_affine) if it is affine, or replace it in the model")


def find_unsupported(gm: fx.GraphModule, allowed_handlers: set[str] | None = None,
                     batch: dict[fx.Node, tuple[int, ...]] | None = None) -> list[str]:
    """One line per input-dependent node that is neither handled nor on the positive list of
    affine ops (:mod:`signgd_lab.conversion.affine`; ``batch``: the dims that carry the batch,
    from :func:`~signgd_lab.conversion.graph_utils.batch_dims`), or is handled by a handler
    outside ``allowed_handlers``, plus the reason a matched handler refuses a node."""
    dynamic = dynamic_nodes(gm.graph)
    problems = []
    for node in gm.graph.nodes:
        if node not in dynamic or node.op in ("placeholder", "output"):
            continue
        if isinstance(module_of(gm, node), NeuronOp):
            continue
        handler = find_handler(gm, node, dynamic)
        if handler is not None:
            if allowed_handlers is not None and handler.name not in allowed_handlers:
                problems.append(f"{describe(gm, node)}: '{handler.name}' cannot run with these "
                                "dynamics; use dynamics='paper' for non-ReLU networks")
                continue
            reason = handler.check(gm, node) if handler.check else None
            if reason:
                problems.append(f"{describe(gm, node)}: {reason}")
            continue
        if user_affine_op(gm, node, dynamic) is not None:
            continue
        why = affine_violation(gm, node, dynamic, batch)
        if why is not None and op_name(node) in WHY_NOT_A_NEURON:
            problems.append(f"{describe(gm, node)}: cannot be a neuron: it "
                            f"{WHY_NOT_A_NEURON[op_name(node)]}")
        elif why is not None:
            hint = HINT if why.startswith("is not on the list") else ""
            problems.append(f"{describe(gm, node)}: no handler, and it {why}"
                            + (f"; {hint}" if hint else ""))
    return problems
