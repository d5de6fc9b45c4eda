"""Resolve a model name from the notebooks / report: a zoo model or a timm architecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_digits_split
from .registry import list_models, load


@dataclass
class ModelBundle:
    """A model with data to calibrate and evaluate it.

    ``y_test`` is None for timm architectures (random weights: no meaningful labels).
    """

    name: str
    model: nn.Module
    calibration: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor | None
    source: str


def resolve_model(name: str, samples: int = 64, calibration_samples: int = 256, seed: int = 0,
                  device: str = "cpu") -> ModelBundle:
    """A zoo model (trained, cached) or a timm model created with ``pretrained=False`` (random
    weights, seeded), with digits data shaped for it (timm: upsampled to its input size and
    repeated over its channels). Nothing is downloaded."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    for key, value in (("samples", samples), ("calibration_samples", calibration_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if name in list_models():
        model, (x_tr, _), (x_te, y_te) = load(name)
        return ModelBundle(name, model.to(device), x_tr[:calibration_samples].to(device),
                           x_te[:samples].to(device), y_te[:samples].to(device), "zoo")
    import timm

    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}: not a zoo model ({', '.join(list_models())}) "
                         "nor a timm architecture (see timm.list_models())")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval().to(device)
    c, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    (x_tr, _), (x_te, _) = load_digits_split(8)

    def shape(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return ((x - 0.5) / 0.25).repeat(1, c, 1, 1).to(device)

    return ModelBundle(name, model, shape(x_tr[:calibration_samples]), shape(x_te[:samples]),
                       None, "timm (pretrained=False, random weights)")
