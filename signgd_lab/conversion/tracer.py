"""torch.fx tracing that keeps timm's building blocks (and our neuron modules) as leaves, with
in-place ops made pure (:mod:`signgd_lab.conversion.inplace`)."""
from __future__ import annotations

import copy
import inspect

from torch import fx, nn

from .errors import ConversionError
from .inplace import functionalize_inplace
from .lazy_imports import resolve_loaded, timm_notrace

_TIMM_LEAVES = ("timm.layers.LayerNorm", "timm.layers.LayerNorm2d", "timm.layers.GELU",
                "timm.layers.Attention", "timm.models.mlp_mixer.Affine")


def _timm_leaf_types() -> tuple[type, ...]:
    """timm's blocks that handlers convert whole, and every class timm registers as not
    traceable; empty while timm is not imported (then no model holds them)."""
    return resolve_loaded(_TIMM_LEAVES) + timm_notrace("modules")


class LeafTracer(fx.Tracer):
    """fx tracer whose leaves are torch.nn's modules plus timm's LayerNorm, LayerNorm2d, GELU,
    Attention, Affine, every timm ``register_notrace_module`` class and ``extra_leaves``.

    Leaves stay as single ``call_module`` nodes so the op-handler registry sees them whole
    (a timm Attention is decomposed by its handler instead of being traced into SDPA).
    """

    def __init__(self, extra_leaves: tuple[type, ...] = ()) -> None:
        super().__init__(autowrap_functions=timm_notrace("functions"))
        self.leaf_types = _timm_leaf_types() + tuple(extra_leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) in self.leaf_types or isinstance(m, self.leaf_types) and \
                _keeps_forward(type(m), self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _keeps_forward(kind: type, bases: tuple[type, ...]) -> bool:
    """A subclass of a leaf type stays a leaf only if it does not override ``forward`` (a
    subclass that computes more is traced through, so its extra ops are seen)."""
    return any(issubclass(kind, b) and kind.forward is b.forward for b in bases)


def _optional_args(model: nn.Module) -> dict[str, object]:
    """forward() arguments after the first that have defaults, bound to those defaults (so an
    optional ``attn_mask=None`` is traced as None rather than as a second input)."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in params
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def trace(model: nn.Module, extra_leaves: tuple[type, ...] = ()) -> fx.GraphModule:
    """Trace an eval-mode deep copy of ``model`` (the model itself is left untouched)."""
    from .neuron_ops import NeuronOp

    clone = copy.deepcopy(model).eval()
    tracer = LeafTracer((NeuronOp, *extra_leaves))
    try:
        graph = tracer.trace(clone, concrete_args=_optional_args(clone))
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError, ...)
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}\n"
            "Hint: conversion needs a graph that does not depend on input values. Move "
            "data-dependent control flow (if/for on tensor values) out of forward(), or mark the "
            "offending submodule as a leaf with timm.layers.register_notrace_module if it is "
            "affine, or convert a submodule that traces."
        ) from exc
    name = type(clone).__name__
    return functionalize_inplace(fx.GraphModule(tracer.root, graph, name))
