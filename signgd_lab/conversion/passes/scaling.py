"""Activation scaling (docs/theory.md, section 4, step 7, and section 6): bring each neuron's
output into the signGD range with an exact rewrite, using the calibration statistics.

Paper: ReLU only, x / m -> ReLU -> * m with m the elementwise maximum of the ReLU output.
The extended recipe normalises every target by its algebra (all exact in the ANN):

=====================  ==========================================================
relu                   x / m -> relu -> * m             (m: max of the output)
leaky_relu, abs        x / m -> g -> * m                (m: max |x|)
max                    a / m, b / m -> max -> * m       (m: max of |a|, |b|)
square                 x / m -> square -> * m^2         (m: max |x|)
div, rsqrt_div         x1 / k -> g -> * k               (k: max |output|)
exp                    x - c -> exp -> * e^c            (c: max x)
mul                    a / sa, b / sb -> mul -> * sa sb
matmul                 a / sa[n], b / sb[m] -> @ -> * sa[n] sb[m]  (row / column maxima)
gelu, silu, log, ...   x / s -> h(z) = g(s z) / s -> * s   (s: max |x|; the neurons run h)
=====================  ==========================================================

The rescaling is owned by each neuron module (:meth:`NeuronOp.set_scaling`), which divides its
inputs and multiplies its output exactly as the table says: the graph keeps its shape, and the
neuron kernels do the divisions and the multiplication where they run.
"""
from __future__ import annotations

import copy

import torch
from torch import fx

from ..graph_utils import finish
from ..neuron_ops import MatmulNeuronOp, NeuronOp
from ..recipes import Recipe
from .calibration import base_name

_HOMOGENEOUS = {"leaky_relu", "abs"}
_OUTPUT_SCALED = {"div", "rsqrt_div"}
_RESHAPED = {"gelu", "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh", "softplus", "log"}


def _floor(m: torch.Tensor, floor: float) -> torch.Tensor:
    return torch.where(m <= floor, torch.ones_like(m), m)


def _plan(module: NeuronOp, s: dict[str, torch.Tensor], floor: float):
    """(input transforms, output multiplier) for one neuron: each input transform is
    ("div", tensor) / ("sub", tensor) / None; the multiplier a tensor or None."""
    name = base_name(module.target.name)
    if isinstance(module, MatmulNeuronOp):
        sa = _floor(s["abs_in0"].amax(-1, keepdim=True), floor)  # (..., N, 1)
        sb = _floor(s["abs_in1"].amax(-2, keepdim=True), floor)  # (..., 1, M)
        return [("div", sa), ("div", sb)], sa * sb
    if name == "relu":
        m = _floor(s["out"], floor)
        return [("div", m)], m
    if name in _HOMOGENEOUS or name in _RESHAPED:
        m = _floor(s["abs_in0"], floor)
        return [("div", m)], m
    if name == "max":
        m = _floor(torch.maximum(s["abs_in0"], s["abs_in1"]), floor)
        return [("div", m), ("div", m)], m
    if name == "square":
        m = _floor(s["abs_in0"], floor)
        return [("div", m)], m * m
    if name in _OUTPUT_SCALED:
        k = _floor(s["abs_out"], floor)
        return [("div", k), None], k
    if name == "exp":
        c = s["in0"]
        return [("sub", c)], torch.exp(c)
    if name == "mul":
        sa, sb = _floor(s["abs_in0"], floor), _floor(s["abs_in1"], floor)
        return [("div", sa), ("div", sb)], sa * sb
    return None


def scale_activations(gm: fx.GraphModule, stats: dict[str, dict[str, torch.Tensor]],
                      recipe: Recipe) -> fx.GraphModule:
    """Return a copy of ``gm`` where every neuron module with calibration ``stats`` (keyed by
    module path) is rescaled as in the module docstring (the ANN's output is unchanged)."""
    gm = copy.deepcopy(gm)
    for name, module in gm.named_modules():
        if not isinstance(module, NeuronOp) or name not in stats:
            continue
        plan = _plan(module, stats[name], recipe.calibration_floor)
        if plan is None:
            continue
        transforms, multiplier = plan
        divisors = [t[1] if t is not None and t[0] == "div" else None for t in transforms]
        shift = transforms[0][1] if transforms[0] is not None and transforms[0][0] == "sub" \
            else None
        reshaped = base_name(module.target.name) in _RESHAPED
        module.set_scaling(divisors, shift, multiplier, divisors[0] if reshaped else None)
    return finish(gm)
