"""Calibration (docs/theory.md, section 4, step 6): statistics of each neuron's inputs and outputs
over the calibration set, elementwise (one activation's shape, batch reduced by max)."""
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


def base_name(target_name: str) -> str:
    """``leaky_relu(slope=0.2)`` -> ``leaky_relu``."""
    return target_name.split("(")[0]


def _running_max(stats: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    m = value.detach().amax(0)
    stats[key] = m if key not in stats else torch.maximum(stats[key], m)


def calibrate(gm: fx.GraphModule, batches: list[torch.Tensor], recipe: Recipe
              ) -> dict[str, dict[str, torch.Tensor]]:
    """Per neuron module whose target is in ``recipe.scaled_targets``, elementwise maxima over
    the calibration set: ``out`` (the output; the reference's ReLU statistic), ``abs_out``,
    ``in0`` (the first input) and ``abs_in0`` / ``abs_in1`` (each input's magnitude)."""
    stats: dict[str, dict[str, torch.Tensor]] = {}
    hooks = []

    def hook_for(name: str):
        def hook(module: NeuronOp, inputs: tuple, output: torch.Tensor) -> None:
            s = stats.setdefault(name, {})
            _running_max(s, "out", output)
            _running_max(s, "abs_out", output.abs())
            _running_max(s, "in0", inputs[0])
            for i, x in enumerate(inputs):
                _running_max(s, f"abs_in{i}", x.abs())

        return hook

    for name, mod in gm.named_modules():
        if isinstance(mod, NeuronOp) and base_name(mod.target.name) in recipe.scaled_targets:
            hooks.append(mod.register_forward_hook(hook_for(name)))
    device = next((p.device for p in gm.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in gm.parameters()), torch.float32)
    try:
        with torch.no_grad():
            for b in batches:
                gm(b.to(device=device, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
    return stats
