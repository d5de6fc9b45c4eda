"""The positive list of ops that may stand between neurons in a converted network.

A spiking network runs every op that is not a neuron on spike trains, c time steps stacked on
the batch dim; that is only right for ops that are affine in their input-dependent ("dynamic")
operands and that keep the samples of a batch apart. Each entry below names the op and the
conditions that make it so (which operands may be dynamic, which dims a reduction may touch).
:func:`affine_violation` says why a node is not on the list; nothing else decides what passes
as glue (user ops declared with ``register_affine`` are tested numerically, see
:mod:`signgd_lab.conversion.passes.audit`).
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

from torch import fx, nn

from .graph_utils import call_arguments, module_of, op_name
from .lazy_imports import resolve_loaded


@dataclass
class Site:
    """A node being checked: its graph, normalised arguments, the input-dependent nodes and the
    dims that carry the batch (per node, from :func:`~signgd_lab.conversion.graph_utils.batch_dims`;
    empty when unknown)."""

    gm: fx.GraphModule
    node: fx.Node
    args: dict[str, object]
    dynamic: set[fx.Node]
    batch: dict[fx.Node, tuple[int, ...]]

    def is_dynamic(self, value: object) -> bool:
        """True when ``value`` (a node, or a list / tuple of them) depends on the input."""
        if isinstance(value, (list, tuple)):
            return any(self.is_dynamic(v) for v in value)
        return isinstance(value, fx.Node) and value in self.dynamic

    def dynamic_operands(self, *names: str) -> list[str]:
        """Which of the named arguments depend on the input."""
        return [n for n in names if self.is_dynamic(self.args.get(n))]

    def batch_of(self, name: str = "input") -> tuple[int, ...]:
        """Dims of argument ``name`` that carry the batch (() when unknown)."""
        value = self.args.get(name)
        return self.batch.get(value, ()) if isinstance(value, fx.Node) else ()

    def ndim(self, name: str = "input") -> int | None:
        """Rank of argument ``name`` (None when unknown)."""
        value = self.args.get(name)
        meta = value.meta.get("tensor_meta") if isinstance(value, fx.Node) else None
        return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None


Rule = Callable[[Site], "str | None"]


def _any(site: Site) -> str | None:
    return None


def _static(*names: str) -> Rule:
    def rule(site: Site) -> str | None:
        dyn = site.dynamic_operands(*names)
        if dyn:
            return (f"is not affine: its {' and '.join(repr(n) for n in dyn)} operand depends on the "
                    "input (only constant " + ", ".join(repr(n) for n in names) + " keep it affine)")
        return None

    return rule


def _at_most_one(*names: str) -> Rule:
    def rule(site: Site) -> str | None:
        dyn = site.dynamic_operands(*names)
        if len(dyn) > 1:
            return (f"is not affine: a product of {len(dyn)} input-dependent operands "
                    f"({', '.join(dyn)}); it needs product neurons")
        return None

    return rule


def _einsum(site: Site) -> str | None:
    operands = [a for a in site.node.args[1:]]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if sum(site.is_dynamic(o) for o in operands) > 1:
        return "is not affine: einsum of several input-dependent operands; it needs product neurons"
    return None


def _dims(value: object, ndim: int | None) -> list[int] | None:
    if value is None:
        return None
    dims = list(value) if isinstance(value, (list, tuple)) else [value]
    if ndim is None:
        return [int(d) for d in dims]
    return [int(d) % ndim if ndim else 0 for d in dims]


def _keeps_batch(all_if_none: bool = True) -> Rule:
    """An op along ``dim`` (a reduction, cat, split, flip, ...): the dims must not carry the
    batch; ``all_if_none``: a missing dim means every dim (a full reduction)."""

    def rule(site: Site) -> str | None:
        value = site.args.get("dim")
        if value is None and not all_if_none:
            return None
        if value is None:
            return ("reduces over every dim, the batch dim included: each sample would depend "
                    "on the others; pass the dims to reduce (e.g. dim=(1, 2))")
        ref = site.args.get("input", site.args.get("self"))
        if ref is None and site.args.get("tensors"):
            ref = site.args["tensors"][0]
        if not isinstance(ref, fx.Node):
            return None
        meta = ref.meta.get("tensor_meta")
        ndim = len(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        if ref not in site.batch:  # where the batch is is unknown: the audit checks it later
            return None
        dims = _dims(value, ndim)
        hit = sorted(set(dims) & set(site.batch[ref])) if ndim is not None else []
        if hit:
            return (f"works along dim {hit[0]}, which carries the batch: each sample would "
                    "depend on the others; use the other dims")
        return None

    return rule


def _getitem(site: Site) -> str | None:
    base = site.node.args[0]
    index = site.node.args[1]
    if not isinstance(base, fx.Node) or base not in site.batch:
        return None  # an element of a tuple (unbind, split, ...)
    if site.is_dynamic(index):
        return "is not affine: indexing with input-dependent indices"
    batch = site.batch[base]
    if 0 in batch:
        first = index[0] if isinstance(index, tuple) and index else index
        if first is not Ellipsis and first is not None and first != slice(None):
            return "indexes dim 0, which carries the batch: it would pick samples"
    return None


def _eval_only(site: Site) -> str | None:
    if site.args.get("training"):
        return "runs in training mode (batch statistics / random dropout); convert in eval mode"
    return None


def _batch_norm(site: Site) -> str | None:
    if site.args.get("training") or site.args.get("running_mean") is None:
        return "uses batch statistics, which mix the samples; use running statistics (eval)"
    return _static("running_mean", "running_var", "weight", "bias")(site)


def _finite(site: Site, *names: str) -> str | None:
    """Refuse an infinite or NaN number among the arguments ``names``."""
    for name in names:
        value = site.args.get(name)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return (f"fills with {value}: an infinite value reaches the neurons downstream as an "
                    "infinite current (the ANN itself gives NaN after the scaling); use a finite "
                    "value (e.g. -30 to mask a softmax entry: e^-30 is below float32's resolution "
                    "next to 1)")
    return None


def _where(site: Site) -> str | None:
    if site.is_dynamic(site.args.get("condition")):
        return ("is not affine: torch.where on an input-dependent condition (a comparison) has no "
                "neuron; write it with relu / max / min if it is one of those")
    return _finite(site, "input", "other")


def _masked_fill(site: Site) -> str | None:
    if site.is_dynamic(site.args.get("mask")):
        return "is not affine: masked_fill with an input-dependent mask (a comparison)"
    return _finite(site, "value") or _static("value")(site)


def _pad(site: Site) -> str | None:
    return _static("value")(site)


def _div(site: Site) -> str | None:
    if site.args.get("rounding_mode") is not None:
        return "is not affine: division with rounding_mode (integer division) has no neuron"
    return _static("other")(site)


def _both(*rules: Rule) -> Rule:
    def rule(site: Site) -> str | None:
        return next((r for r in (f(site) for f in rules) if r), None)

    return rule


_LINEAR_IN_ALL = (
    "add", "sub", "neg", "pos", "reshape", "view", "permute", "transpose", "flatten",
    "contiguous", "unsqueeze", "squeeze", "expand", "expand_as", "repeat", "clone", "detach",
    "to", "type_as", "float", "double", "movedim", "moveaxis", "swapaxes", "swapdims", "zeros_like", "ones_like",
    "full_like", "new_zeros", "new_ones", "new_full", "tile", "repeat_interleave", "getattr",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "unfold", "fold", "interpolate",
    "upsample", "upsample_nearest", "upsample_bilinear", "view_as", "reshape_as", "t",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "diagonal", "unflatten",
)

RULES: dict[str, Rule] = {name: _any for name in _LINEAR_IN_ALL}
RULES.update({name: _keeps_batch(all_if_none=False) for name in (
    "cat", "concat", "concatenate", "unbind", "chunk", "split", "tensor_split", "narrow", "roll",
    "flip", "select", "cumsum", "index_select", "gather")})
RULES.update({
    "mean": _keeps_batch(), "sum": _keeps_batch(), "stack": _any,
    "getitem": _getitem,
    "mul": _at_most_one("input", "other"), "multiply": _at_most_one("input", "other"),
    "div": _div, "true_divide": _static("other"), "divide": _div,
    "matmul": _at_most_one("input", "other"), "mm": _at_most_one("input", "mat2"),
    "bmm": _at_most_one("input", "mat2"), "einsum": _einsum,
    "addcmul": _at_most_one("tensor1", "tensor2"), "addcdiv": _static("tensor2"),
    "addmm": _at_most_one("mat1", "mat2"), "baddbmm": _at_most_one("batch1", "batch2"),
    "linear": _static("weight", "bias"),
    "conv1d": _static("weight", "bias"), "conv2d": _static("weight", "bias"),
    "conv3d": _static("weight", "bias"), "conv_transpose1d": _static("weight", "bias"),
    "conv_transpose2d": _static("weight", "bias"), "conv_transpose3d": _static("weight", "bias"),
    "dropout": _eval_only, "dropout1d": _eval_only, "dropout2d": _eval_only,
    "dropout3d": _eval_only, "alpha_dropout": _eval_only,
    "batch_norm": _batch_norm, "where": _where, "masked_fill": _masked_fill, "pad": _pad,
})
for _name in ("index_select", "gather"):
    RULES[_name] = _both(_static("index"), RULES[_name])

_MODULES: tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.ConvTranspose3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.ZeroPad1d,
    nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.ReflectionPad1d,
    nn.ReflectionPad2d, nn.ReflectionPad3d, nn.CircularPad1d, nn.CircularPad2d,
    nn.CircularPad3d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
          nn.InstanceNorm3d)


def _timm_modules() -> tuple[type, ...]:
    """timm's affine modules (empty while timm is not imported: then no model holds them)."""
    return resolve_loaded(("timm.layers.DropPath", "timm.layers.LayerScale",
                           "timm.layers.LayerScale2d", "timm.models.mlp_mixer.Affine"))


def _timm_layout_functions() -> tuple[object, ...]:
    """timm functions that fx keeps whole (they read shapes as ints) and that only reshape and
    permute their tensor argument: swin's ``window_reverse`` (view, permute, view)."""
    return resolve_loaded(("timm.models.swin_transformer.window_reverse",))


def _module_violation(gm: fx.GraphModule, node: fx.Node) -> str | None:
    mod = module_of(gm, node)
    kind = type(mod)
    if kind in _NORMS:
        if mod.training:
            return "runs in training mode; convert in eval mode"
        if not mod.track_running_stats or mod.running_mean is None:
            return ("normalises with the statistics of each input, which is not affine; "
                    "a normalisation handler must decompose it")
        return None
    if kind in _MODULES or kind in _timm_modules():
        if getattr(mod, "training", False) and kind in (nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                                                        nn.Dropout3d, nn.AlphaDropout):
            return "runs in training mode (random dropout); convert in eval mode"
        return None
    return "is not on the list of affine modules (matched by exact type: a subclass may compute more)"


def affine_violation(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node],
                     batch: dict[fx.Node, tuple[int, ...]] | None = None) -> str | None:
    """Why input-dependent ``node`` is not a proven-affine op (None when it is)."""
    if node.op == "call_module":
        return _module_violation(gm, node)
    if node.op == "call_function" and node.target in _timm_layout_functions():
        return None
    name = op_name(node)
    rule = RULES.get(name) if name is not None else None
    if rule is None:
        return "is not on the list of affine ops"
    return rule(Site(gm, node, call_arguments(gm, node), dynamic, batch or {}))


def is_proven_affine(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node],
                     batch: dict[fx.Node, tuple[int, ...]] | None = None) -> bool:
    """True when ``node`` is on the positive list and meets its conditions."""
    return affine_violation(gm, node, dynamic, batch) is None
