"""Resolve the debugger's model and data: a zoo model or a timm architecture on digits, or
any model spec on any data spec (:mod:`.model_spec`, :mod:`.datasets`)."""
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
                  device: str = "cpu", data: str = "digits", weights: str | None = None,
                  pretrained: bool = False, trust_model_file: bool = False) -> ModelBundle:
    """A zoo model (trained, cached) or a timm model created with ``pretrained=False`` (random
    weights, seeded), with digits data shaped for it (timm: upsampled to its input size and
    repeated over its channels). Nothing is downloaded.

    Any other model spec (``timm:NAME``, ``module.path:factory``, a model file; ``weights``,
    ``pretrained``, ``trust_model_file`` as in :func:`~signgd_lab.zoo.load_model`) or a data
    spec other than ``digits`` goes through :func:`_resolve_spec`: calibration and test
    inputs are seeded samples of the data's calibration and evaluation splits."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    for key, value in (("samples", samples), ("calibration_samples", calibration_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if data != "digits" or weights is not None or pretrained or trust_model_file or (
            name not in list_models() and not _is_timm_name(name)):
        return _resolve_spec(name, samples, calibration_samples, seed, device, data, weights,
                             pretrained, trust_model_file)
    if name in list_models():
        model, (x_tr, _), (x_te, y_te) = load(name)
        return ModelBundle(name, model.to(device), x_tr[:calibration_samples].to(device),
                           x_te[:samples].to(device), y_te[:samples].to(device), "zoo")
    import timm

    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}: not a zoo model ({', '.join(list_models())}) "
                         "nor a timm architecture (see timm.list_models())")
    with torch.random.fork_rng(devices=[]):  # seeds the random weights, not the caller's state
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False).eval().to(device)
    c, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224))
    (x_tr, _), (x_te, _) = load_digits_split(8)

    def shape(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return ((x - 0.5) / 0.25).repeat(1, c, 1, 1).to(device)

    return ModelBundle(name, model, shape(x_tr[:calibration_samples]), shape(x_te[:samples]),
                       None, "timm (pretrained=False, random weights)")


def _is_timm_name(name: str) -> bool:
    import timm

    return timm.is_model(name)


def _resolve_spec(spec: str, samples: int, calibration_samples: int, seed: int, device: str,
                  data: str, weights: str | None, pretrained: bool, trust_model_file: bool
                  ) -> ModelBundle:
    """Any model spec on any data spec; labels are kept unless the weights are random."""
    from .datasets import calibration_loader, check_model_fits, load_data
    from .model_spec import load_model

    loaded = load_model(spec, pretrained, weights, trust_model_file, seed)
    dataset = load_data(data, loaded)
    model = loaded.model.to(device)
    check_model_fits(model, dataset, device)
    cal = torch.cat([x for x, _ in calibration_loader(dataset, calibration_samples, 64, seed)])
    pick = torch.randperm(len(dataset.evaluation), generator=torch.Generator().manual_seed(seed))
    xs, ys = zip(*(dataset.evaluation[i] for i in sorted(pick[:samples].tolist())))
    random_weights = "random weights" in loaded.source and weights is None
    return ModelBundle(spec, model, cal.to(device), torch.stack(xs).to(device),
                       None if random_weights else torch.as_tensor(ys).to(device),
                       f"{loaded.source}; data: {dataset.description}")
