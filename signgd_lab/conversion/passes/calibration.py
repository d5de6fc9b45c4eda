"""Calibration (THEORY.md section 4, step 6): elementwise maxima of the scaled activations."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx

from ..errors import ConversionError
from ..neuron_ops import NeuronOp
from ..recipes import Recipe


def collect_batches(calibration: torch.Tensor | Iterable, max_batches: int | None = None,
                    batch_size: int = 256) -> list[torch.Tensor]:
    """Input batches from a tensor (split into ``batch_size`` rows) or an iterable of batches
    (tensors, or tuples / lists / dicts whose first value is the input)."""
    if isinstance(calibration, torch.Tensor):
        batches = list(torch.split(calibration, batch_size)) if calibration.numel() else []
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        batches = []
        for item in calibration:
            if isinstance(item, dict):
                item = next(iter(item.values()))
            elif isinstance(item, (tuple, list)):
                item = item[0]
            if not isinstance(item, torch.Tensor):
                raise ConversionError(f"calibration batches must be tensors, got {type(item).__name__}")
            batches.append(item)
            if max_batches is not None and len(batches) >= max_batches:
                break
    else:
        raise ConversionError(
            f"calibration must be a tensor or a DataLoader of input batches, got "
            f"{type(calibration).__name__}")
    if max_batches is not None:
        batches = batches[:max_batches]
    if not batches or all(b.shape[0] == 0 for b in batches):
        raise ConversionError("calibration data is empty; pass at least one input batch "
                              "(e.g. a few hundred training inputs)")
    for i, b in enumerate(batches):
        if not b.is_floating_point():
            raise ConversionError(f"calibration batch {i} has dtype {b.dtype}; pass float inputs")
        if not torch.isfinite(b).all():
            raise ConversionError(f"calibration batch {i} contains NaN or Inf; clean the data first")
    return batches


def _base(name: str) -> str:
    return name.split("(")[0]


def calibrate(gm: fx.GraphModule, batches: list[torch.Tensor], recipe: Recipe
              ) -> dict[str, torch.Tensor]:
    """Elementwise max over the calibration set, per neuron module whose target is in
    ``recipe.scaled_targets``: of the output for ReLU (the reference), of |input| otherwise.
    Entries <= ``recipe.calibration_floor`` become 1. Shapes: one activation without batch."""
    maxima: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(name: str, use_output: bool):
        def hook(module: NeuronOp, inputs: tuple, output: torch.Tensor) -> None:
            val = output if use_output else inputs[0].abs()
            m = val.detach().amax(0)
            maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)

        return hook

    for name, mod in gm.named_modules():
        if isinstance(mod, NeuronOp) and mod.target.arity == 1 \
                and _base(mod.target.name) in recipe.scaled_targets:
            hooks.append(mod.register_forward_hook(hook_for(name, mod.target.name == "relu")))
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in gm.parameters()), torch.float32)
    try:
        with torch.no_grad():
            for b in batches:
                gm(b.to(device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.where(v <= recipe.calibration_floor, torch.ones_like(v), v)
            for k, v in maxima.items()}
