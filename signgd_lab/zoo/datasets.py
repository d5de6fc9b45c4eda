"""Data specs: one string names a data set everywhere (API, ``signgd-lab report``, ``evaluate``).

- ``digits`` (default): scikit-learn's digits, shaped for the model (zoo: its image size;
  timm: upsampled to its input size, repeated over its channels, normalised with its mean/std);
- an image folder: the ImageNet layout ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``
  (calibrate on train, evaluate on val), or one tree of class folders (torchvision
  ``ImageFolder``: calibrate on a seeded sample of it, evaluate on all of it);
- ``torchvision:NAME:ROOT``: a torchvision data set already on disk under ROOT (e.g.
  ``torchvision:CIFAR10:~/data``; nothing is downloaded): calibrate on its training split,
  evaluate on its test split;
- a ``.pt`` file holding ``(x, y)`` tensors (or ``{"x": ..., "y": ...}``): calibrate on a
  seeded sample, evaluate on all of it.

Images are transformed with timm's eval transforms from the model's data config
(``timm.data.resolve_data_config`` / ``create_transform``), or resized, centre-cropped and
normalised with the user's ``image_size`` / ``mean`` / ``std`` (one mean value: grayscale).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .data import load_digits_split
from .errors import SpecError
from .model_spec import LoadedModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class LoadedData:
    """A data set named by a spec.

    Attributes:
        spec: the spec it was loaded from.
        calibration: the split calibration samples are drawn from (items ``(x, y)``).
        evaluation: the split accuracy is measured on (items ``(x, y)``).
        num_classes: number of classes named by the data (class folders, torchvision
            ``classes``, digits' 10); None for a ``.pt`` file (its labels are checked against
            the model's head instead).
        description: one line for results and reports.
    """

    spec: str
    calibration: Dataset
    evaluation: Dataset
    num_classes: int | None
    description: str


def load_data(spec: str, model: LoadedModel | None = None, image_size: int | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None
              ) -> LoadedData:
    """The data set named by ``spec`` (see the module docstring), shaped for ``model``.

    Raises:
        SpecError: missing path, a folder without images, an unknown torchvision data set or
            one not found under its root, a malformed ``.pt`` file, images whose preprocessing
            is unknown (a non-timm, non-zoo model without ``image_size``/``mean``/``std``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"data spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    _check_normalisation(image_size, mean, std)
    if spec == "digits":
        return _digits(model, image_size, mean, std)
    if spec.startswith("torchvision:"):
        return _torchvision(spec, model, image_size, mean, std)
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        raise SpecError(f"data {spec!r} does not exist: pass 'digits', an image folder, "
                        "torchvision:NAME:ROOT or a .pt file holding (x, y)")
    if path.is_dir():
        return _folder(spec, path, model, image_size, mean, std)
    return _tensor_file(spec, path)


def check_data_spec(spec: str) -> None:
    """Check ``spec`` without reading the data (for parameter checks before a run): ``digits``,
    ``torchvision:NAME:ROOT`` with an existing ROOT, or an existing folder or file. Raises
    :class:`SpecError`."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"data spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec == "digits":
        return
    if spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SpecError(f"torchvision data spec {spec!r} must be torchvision:NAME:ROOT")
        if not Path(os.path.expanduser(parts[2])).is_dir():
            raise SpecError(f"root folder {parts[2]} of {spec!r} does not exist")
        return
    if not Path(os.path.expanduser(spec)).exists():
        raise SpecError(f"data {spec!r} does not exist: pass 'digits', an image folder, "
                        "torchvision:NAME:ROOT or a .pt file holding (x, y)")


def calibration_loader(data: LoadedData, samples: int, batch_size: int, seed: int = 0,
                       workers: int = 0) -> DataLoader:
    """A loader over ``samples`` items of the calibration split drawn without replacement
    with a seeded permutation (all of them when the split is smaller)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise SpecError(f"calibration samples must be a positive integer, got {samples!r}")
    n = len(data.calibration)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    return DataLoader(Subset(data.calibration, sorted(order.tolist())), batch_size=batch_size,
                      num_workers=workers)


def check_model_fits(model: torch.nn.Module, data: LoadedData, device: str | torch.device = "cpu"
                     ) -> int:
    """Run ``model`` on one evaluation sample and check its head against the data's classes;
    returns the number of outputs. Raises :class:`SpecError` when the input does not fit the
    model or the class counts differ."""
    if len(data.evaluation) == 0:
        raise SpecError(f"data {data.spec!r} has no evaluation samples")
    x, _ = data.evaluation[0]
    run = getattr(model, "ann", model)  # a SpikingNetwork evaluates its ANN this way
    try:
        with torch.no_grad():
            out = run(x.unsqueeze(0).to(device))
    except Exception as err:
        raise SpecError(f"the model does not accept inputs of shape {tuple(x.shape)} from data "
                        f"{data.spec!r}: {type(err).__name__}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise SpecError(f"the model must return logits of shape (batch, classes); it returned "
                        f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    classes = out.shape[-1]
    if data.num_classes is not None and data.num_classes != classes:
        raise SpecError(f"data {data.spec!r} has {data.num_classes} classes but the model's head "
                        f"has {classes} outputs; use data with the model's classes or a model "
                        f"with {data.num_classes} outputs")
    if data.num_classes is None:
        top = int(_labels(data.evaluation).max()) + 1
        if top > classes:
            raise SpecError(f"data {data.spec!r} has labels up to {top - 1} but the model's head "
                            f"has only {classes} outputs")
    return classes


def _labels(dataset: Dataset) -> torch.Tensor:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    return torch.as_tensor([dataset[i][1] for i in range(len(dataset))])


def _check_normalisation(image_size: int | None, mean: Sequence[float] | None,
                         std: Sequence[float] | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise SpecError(f"image_size must be a positive integer, got {image_size!r}")
    if (mean is None) != (std is None):
        raise SpecError("give mean and std together (one value per channel)")
    if mean is not None:
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise SpecError(f"mean and std need 1 (grayscale) or 3 (RGB) values each, got "
                            f"{list(mean)} and {list(std)}")
        if any(not s > 0 for s in std):
            raise SpecError(f"std values must be > 0, got {list(std)}")


def _digits(model: LoadedModel | None, image_size: int | None, mean: Sequence[float] | None,
            std: Sequence[float] | None) -> LoadedData:
    """Digits at the zoo model's size, or shaped like the model's input (timm config)."""
    config = data_config_of(model)
    if config is None or (model is not None and model.zoo_entry is not None):
        size = image_size or (model.zoo_entry.image_size if model and model.zoo_entry else 8)
        (x_tr, y_tr), (x_te, y_te) = load_digits_split(size)
        if mean is not None:
            x_tr, x_te = [_normalise(x.repeat(1, len(mean), 1, 1), mean, std) for x in (x_tr, x_te)]
        return LoadedData("digits", TensorDataset(x_tr, y_tr), TensorDataset(x_te, y_te), 10,
                          f"scikit-learn digits ({len(x_tr)} train / {len(x_te)} test)")
    c, h, w = config["input_size"]
    if image_size is not None:
        h = w = image_size
    mean, std = mean or config["mean"], std or config["std"]
    channels = len(mean) if len(mean) > 1 else c
    (x_tr, y_tr), (x_te, y_te) = load_digits_split(8)

    def shape(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return _normalise(x.repeat(1, channels, 1, 1), mean, std)

    return LoadedData("digits", TensorDataset(shape(x_tr), y_tr), TensorDataset(shape(x_te), y_te),
                      10, f"scikit-learn digits upsampled to {channels}x{h}x{w}")


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(list(mean), dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s).contiguous()


def data_config_of(model: LoadedModel | None) -> dict[str, Any] | None:
    """The model's preprocessing in timm's data-config form (``input_size``, ``mean``, ``std``,
    ...): timm's config (or the one saved with a network), a zoo model's (1, s, s) in [0, 1];
    None when unknown."""
    if model is None:
        return None
    if model.data_config is not None:
        return dict(model.data_config)
    if model.zoo_entry is not None:
        s = model.zoo_entry.image_size
        return dict(input_size=(1, s, s), mean=(0.0,), std=(1.0,), crop_pct=1.0,
                    interpolation="bilinear")
    return None


class ToMode:
    """PIL image -> the given mode (``"L"`` grayscale, ``"RGB"``); picklable for workers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        return image if image.mode == self.mode else image.convert(self.mode)


def image_transform(model: LoadedModel | None, image_size: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    what: str = "this data") -> Callable:
    """The eval transform of PIL images for ``model``: timm's (``create_transform`` of its data
    config, with the user's size/mean/std overriding) for timm models, else resize (shorter
    side), centre-crop and normalise with the zoo model's or the user's values."""
    from torchvision import transforms

    config = data_config_of(model)
    if config is None and (image_size is None or mean is None):
        name = model.spec if model is not None else "the model"
        raise SpecError(f"{what} needs the preprocessing of {name}, which is not a timm or zoo "
                        "model: pass image_size, mean and std (--image-size, --mean, --std; one "
                        "mean/std value for grayscale)")
    config = config or {}
    if mean is not None:
        config.update(mean=tuple(mean), std=tuple(std))
    channels = len(config["mean"]) if len(config["mean"]) > 1 else config.get(
        "input_size", (1,))[0]
    if image_size is not None:
        config["input_size"] = (channels, image_size, image_size)
    if model is not None and model.data_config is not None and channels == 3:
        from timm.data import create_transform

        keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        return transforms.Compose([ToMode("RGB"), create_transform(
            **{k: config[k] for k in keys if k in config}, is_training=False)])
    size = config["input_size"][-1]
    return transforms.Compose([
        ToMode("L" if channels == 1 else "RGB"), transforms.Resize(size), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize(list(config["mean"]), list(config["std"]))])


def _image_folder(path: Path, transform: Callable) -> Dataset:
    from torchvision.datasets import ImageFolder

    classes = sorted(p for p in path.iterdir() if p.is_dir())
    empty = [p.name for p in classes if not any(
        f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*") if f.is_file())]
    if not classes:
        raise SpecError(f"image folder {path} has no class folders: expected "
                        f"{path}/<class>/<image> (or {path}/train/... and {path}/val/...)")
    if len(empty) == len(classes):
        raise SpecError(f"image folder {path} has no images (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)} files in its {len(classes)} class folders)")
    if empty:
        raise SpecError(f"image folder {path}: class folder(s) {', '.join(empty[:5])} hold no "
                        "images; remove them or add their images (class indices follow the "
                        "sorted folder names)")
    return ImageFolder(str(path), transform=transform)


def _folder(spec: str, path: Path, model: LoadedModel | None, image_size: int | None,
            mean: Sequence[float] | None, std: Sequence[float] | None) -> LoadedData:
    transform = image_transform(model, image_size, mean, std, what=f"image folder {spec}")
    train, val = path / "train", path / "val"
    if train.is_dir() and val.is_dir():
        cal, ev = _image_folder(train, transform), _image_folder(val, transform)
        if cal.classes != ev.classes:
            raise SpecError(f"{train} and {val} have different class folders "
                            f"({len(cal.classes)} and {len(ev.classes)}); they must be the same")
        return LoadedData(spec, cal, ev, len(ev.classes),
                          f"image folder {spec}: calibrate on train/ ({len(cal)} images), "
                          f"evaluate on val/ ({len(ev)} images, {len(ev.classes)} classes)")
    ev = _image_folder(path, transform)
    return LoadedData(spec, ev, ev, len(ev.classes),
                      f"image folder {spec} ({len(ev)} images, {len(ev.classes)} classes; "
                      "calibration on a seeded sample of it)")


def _torchvision(spec: str, model: LoadedModel | None, image_size: int | None,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> LoadedData:
    import torchvision.datasets

    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SpecError(f"torchvision data spec {spec!r} must be torchvision:NAME:ROOT, e.g. "
                        "torchvision:CIFAR10:~/data")
    name, root = parts[1], os.path.expanduser(parts[2])
    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type) or not issubclass(cls, Dataset):
        raise SpecError(f"torchvision has no data set {name!r} (see torchvision.datasets)")
    if not Path(root).is_dir():
        raise SpecError(f"root folder {root} of {spec!r} does not exist")
    params = inspect.signature(cls).parameters
    transform = image_transform(model, image_size, mean, std, what=spec)

    def split(train: bool) -> Dataset:
        kwargs: dict[str, Any] = dict(transform=transform)
        if "download" in params:
            kwargs["download"] = False
        if "train" in params:
            kwargs["train"] = train
        elif "split" in params:
            kwargs["split"] = "train" if train else "test"
        try:
            return cls(root, **kwargs)
        except Exception as err:
            raise SpecError(f"torchvision data set {name} ({'train' if train else 'test'} split) "
                            f"could not be read from {root}: {err}. signgd_lab never downloads; "
                            f"download it once with torchvision.datasets.{name}({root!r}, "
                            "download=True)") from err

    cal, ev = split(True), split(False)
    classes = getattr(ev, "classes", None)
    return LoadedData(spec, cal, ev, len(classes) if classes else None,
                      f"torchvision {name} under {root}: calibrate on train ({len(cal)}), "
                      f"evaluate on test ({len(ev)})")


def _tensor_file(spec: str, path: Path) -> LoadedData:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SpecError(f"{spec} is not a tensor file loadable with torch.load(weights_only=True)"
                        f": {type(err).__name__}; save (x, y) with torch.save((x, y), path)") from None
    if isinstance(obj, dict) and {"x", "y"} <= set(obj):
        obj = (obj["x"], obj["y"])
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2
            and all(isinstance(t, torch.Tensor) for t in obj)):
        raise SpecError(f"{spec} must hold a pair (x, y) of tensors (or a dict with keys x and "
                        f"y), got {type(obj).__name__}")
    x, y = obj
    if not x.is_floating_point():
        raise SpecError(f"x in {spec} has dtype {x.dtype}; inputs must be float")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or len(y) != len(x):
        raise SpecError(f"y in {spec} must be integer class labels of shape ({len(x)},), got "
                        f"{y.dtype} {tuple(y.shape)}")
    if len(x) == 0:
        raise SpecError(f"{spec} holds no samples")
    if (y < 0).any():
        raise SpecError(f"y in {spec} has negative labels")
    dataset = TensorDataset(x, y.long())
    return LoadedData(spec, dataset, dataset, None,
                      f"tensor file {spec} ({len(x)} samples of shape {tuple(x.shape[1:])}; "
                      "calibration on a seeded sample of it)")
