"""``convert``: the executor that runs a recipe's passes on a traced model."""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ..dynamics.config import IFDynamics, SignGDDynamics
from . import decompositions  # noqa: F401  (registers the decomposition handlers)
from . import ops_activations, ops_composite, ops_norms, ops_reductions  # noqa: F401  (handlers)
from .errors import ConversionError
from .graph_utils import dynamic_nodes, module_of
from .handlers import find_handler
from .network import SpikingNetwork
from .neuron_ops import POPULATION_MODULES, populations
from .passes import (calibrate, collect_batches, decompose_attention, decompose_layernorm,
                     decompose_maxpool, find_unsupported, fuse_conv_bn, prepare_composites,
                     replace_nonlinearities, scale_activations, weight_modules)
from .passes.audit import audit
from .passes.separate_samples import separate_samples
from .recipes import Recipe, get_recipe
from .tracer import trace

DYNAMICS_PRESETS: dict[str, SignGDDynamics | IFDynamics] = {
    "paper": SignGDDynamics(),
    "if": IFDynamics(),
    "extended": SignGDDynamics(encoder="direct"),
}
_DEFAULT_RECIPE = {"paper": "paper", "if": "if", "extended": "extended"}
IF_HANDLERS = ("relu", "clamp", "hardtanh", "hardsigmoid", "prelu", "batchnorm_act",
               "max_pool2d_ceil")  # handlers whose neurons are all ReLUs


def resolve_dynamics(dynamics: str | SignGDDynamics | IFDynamics
                     ) -> tuple[SignGDDynamics | IFDynamics, str]:
    """(config, default recipe name) for a preset name or a config object."""
    if isinstance(dynamics, IFDynamics):
        return dynamics, "if"
    if isinstance(dynamics, SignGDDynamics):
        return dynamics, "paper"
    if dynamics not in DYNAMICS_PRESETS:
        raise ConversionError(f"unknown dynamics {dynamics!r}; use one of "
                              f"{', '.join(DYNAMICS_PRESETS)} or a SignGDDynamics / IFDynamics")
    return DYNAMICS_PRESETS[dynamics], _DEFAULT_RECIPE[dynamics]


def _check_model_tensors(model: nn.Module) -> None:
    """One device, a float dtype the signGD steps can resolve, finite values."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    devices = sorted({str(t.device) for t in tensors})
    if len(devices) > 1:
        raise ConversionError(f"the model's parameters are on several devices ({', '.join(devices)}); "
                              "move the model to one device first (model.to(device))")
    dtypes = {t.dtype for t in tensors}
    low = dtypes & {torch.float16, torch.bfloat16}
    if low:
        name = str(next(iter(low))).replace("torch.", "")
        raise ConversionError(
            f"{name} models are not supported: signGD step sizes fall below {name}'s resolution "
            "(eta_128 = 2.2e-4 is lost when added to an estimate of 1.0), so the neurons would stop "
            "moving; convert model.float() (float32) or model.double() instead")
    _check_weights(model)


def _check_weights(model: nn.Module) -> None:
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ConversionError("the model has NaN or Inf in its weights; fix or reload them",
                              [f"parameter/buffer '{n}'" for n in bad])


def convert(model: nn.Module, calibration: torch.Tensor | Iterable,
            dynamics: str | SignGDDynamics | IFDynamics = "paper",
            recipe: str | Recipe | None = None,
            max_calibration_batches: int | None = None) -> SpikingNetwork:
    """Convert ``model`` into a :class:`SpikingNetwork`.

    Args:
        model: any torch.fx-traceable module (timm models included). It is not modified:
            conversion works on an eval-mode deep copy.
        calibration: a tensor of inputs or a DataLoader of batches (tensors or (x, y) pairs).
        dynamics: ``"paper"`` (signGD, lr0=0.15, gamma=0.95, float encoder), ``"if"`` (IF
            neurons with rate coding, ReLU networks only), ``"extended"`` (signGD with a direct
            encoder and the extended recipe) or a :class:`SignGDDynamics` / :class:`IFDynamics`.
        recipe: ``"paper"``, ``"extended"`` or a :class:`Recipe` (default: the preset's).
        max_calibration_batches: use at most this many calibration batches.

    Raises:
        ConversionError: untraceable model, unsupported ops (all listed), empty or non-finite
            calibration data, non-finite weights; and, from the end-of-conversion audit
            (:mod:`signgd_lab.conversion.passes.audit`), any op left in the converted network
            that is neither a neuron nor proven affine, whatever the recipe or handlers.
    """
    if not isinstance(model, nn.Module):
        raise ConversionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dyn, default_recipe = resolve_dynamics(dynamics)
    rec = get_recipe(recipe if recipe is not None else default_recipe)
    _check_model_tensors(model)
    if model.training:
        warnings.warn("model is in training mode; converting an eval-mode copy "
                      "(your model is left as it is)", stacklevel=2)
    batches = collect_batches(calibration, max_calibration_batches)
    params = list(model.parameters())
    if params:
        batches = [b.to(device=params[0].device, dtype=params[0].dtype) for b in batches]
    example = batches[0][:1]

    gm = prepare_composites(trace(model), rec, example)
    allowed = targets = None
    if isinstance(dyn, IFDynamics):
        allowed = set(IF_HANDLERS) | ({"max_pool2d"} if rec.maxpool_neuron == "relu" else set())
        targets = {"relu"}
    problems = find_unsupported(gm, allowed)  # reductions over the batch: the audit, below
    if problems:
        raise ConversionError(
            f"{len(problems)} op(s) in {type(model).__name__} cannot be converted:", problems)

    gm = fuse_conv_bn(gm, example)
    gm = decompose_attention(gm, rec, example)
    gm = decompose_layernorm(gm, rec, example)
    gm = decompose_maxpool(gm, rec, example)
    gm = replace_nonlinearities(gm, rec, example)
    gm = separate_samples(gm, example)
    gm = scale_activations(gm, calibrate(gm, batches, rec), rec)
    gm = weight_modules(gm)
    audit(gm, _audit_samples(batches), targets)
    gm.meta["input_shape"] = tuple(example.shape[1:])

    return SpikingNetwork(gm, dyn, rec.name, rec.offset_sum)


def _audit_samples(batches: list[torch.Tensor], n: int = 3) -> torch.Tensor:
    """``n`` distinct calibration inputs for the audit (perturbed copies when fewer exist)."""
    rows = torch.cat([b[:n] for b in batches])[:n]
    if rows.shape[0] < n:
        gen = torch.Generator().manual_seed(0)
        extra = rows[:1].repeat(n - rows.shape[0], *([1] * (rows.dim() - 1)))
        noise = torch.randn(extra.shape, generator=gen, dtype=extra.dtype).to(extra.device)
        rows = torch.cat([rows, extra + 0.1 * noise * rows.std().clamp_min(0.1)])
    return rows


def count_nonlinear(snn_or_gm: SpikingNetwork | torch.fx.GraphModule) -> dict[str, int]:
    """``{"neurons": populations, "remaining": nonlinear ops left unconverted}`` of a graph."""
    gm = snn_or_gm.graph_module if isinstance(snn_or_gm, SpikingNetwork) else snn_or_gm
    dynamic = dynamic_nodes(gm.graph)
    remaining = sum(1 for node in gm.graph.nodes
                    if not isinstance(module_of(gm, node), POPULATION_MODULES)
                    and node in dynamic and find_handler(gm, node, dynamic) is not None)
    return {"neurons": len(populations(gm)), "remaining": remaining}
