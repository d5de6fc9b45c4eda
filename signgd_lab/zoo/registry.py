"""Registry of the embedded models: builders, training recipe, cache."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import load_digits_split

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ZooEntry:
    """A small model trained on digits by our own seeded code.

    Attributes:
        name: registry name.
        build: returns a freshly initialised model.
        image_size: side of the (upsampled) digit images it takes.
        epochs, lr, weight_decay, batch_size, seed: training recipe (AdamW, cosine decay).
        description: one line for tables.
    """

    name: str
    build: Callable[[], nn.Module]
    image_size: int = 8
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    description: str = ""

    def fingerprint(self) -> str:
        """Hash of the training recipe and the architecture (names the cache file). The
        caller's random state is left as it was."""
        arch = repr(_build_seeded(self))
        recipe = {k: v for k, v in asdict(self).items() if k != "build"}
        return hashlib.sha256(f"{arch}{sorted(recipe.items())}{torch.__version__}".encode()
                              ).hexdigest()[:16]


_MODELS: dict[str, ZooEntry] = {}


def _build_seeded(entry: ZooEntry) -> nn.Module:
    """``entry.build()`` initialised from torch's global generator seeded with ``entry.seed``,
    inside :func:`torch.random.fork_rng` so that the caller's CPU random state is restored (the
    builders draw from the global generator: nn.Module's own initialisers take no generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        return entry.build()


def register_model(entry: ZooEntry, overwrite: bool = False) -> ZooEntry:
    """Add a model to the zoo (``overwrite=True`` to replace one of the same name).

    Raises:
        ValueError: a model called ``entry.name`` is already registered and ``overwrite`` is
            False.
    """
    if entry.name in _MODELS and not overwrite:
        raise ValueError(f"zoo model {entry.name!r} already exists; pass overwrite=True to "
                         "replace it")
    _MODELS[entry.name] = entry
    return entry


def unregister_model(name: str) -> None:
    """Remove a model added with :func:`register_model` (nothing happens for unknown names)."""
    _MODELS.pop(name, None)


def list_models() -> list[str]:
    """Names of the embedded models."""
    return sorted(_MODELS)


def get_entry(name: str) -> ZooEntry:
    """The :class:`ZooEntry` called ``name``."""
    if name not in _MODELS:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {', '.join(list_models())}")
    return _MODELS[name]


def cache_dir() -> Path:
    """Where trained weights are cached: $SIGNGD_LAB_CACHE or ~/.cache/signgd_lab."""
    root = os.environ.get("SIGNGD_LAB_CACHE") or Path.home() / ".cache" / "signgd_lab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def train(entry: ZooEntry, train_split: Split) -> nn.Module:
    """Train ``entry`` from its seed (deterministic for a given torch build and thread count).

    Everything runs inside :func:`torch.random.fork_rng` from torch's global generator seeded
    with ``entry.seed`` (initialisation, and dropout if a model has some; batches come from a
    local generator), so the caller's random state is left as it was.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(entry.seed)
            return _train_seeded(entry, train_split)
    finally:
        torch.set_num_threads(threads)


def _train_seeded(entry: ZooEntry, train_split: Split) -> nn.Module:
    """The training loop of :func:`train` (AdamW, cosine decay), on the seeded global state."""
    model = entry.build()
    x, y = train_split
    opt = torch.optim.AdamW(model.parameters(), lr=entry.lr, weight_decay=entry.weight_decay)
    steps_per_epoch = (len(x) + entry.batch_size - 1) // entry.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, entry.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(entry.seed)
    model.train()
    for _ in range(entry.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), entry.batch_size):
            idx = perm[i:i + entry.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def load(name: str, retrain: bool = False) -> tuple[nn.Module, Split, Split]:
    """``(model, (x_train, y_train), (x_test, y_test))`` for zoo model ``name``.

    The model is trained on first use (seeded, well under a minute on 2 CPU cores) and cached
    in :func:`cache_dir`; later calls load the cached weights. The model is in eval mode. The
    caller's random state (torch's global generator) is left as it was.
    """
    entry = get_entry(name)
    train_split, test_split = load_digits_split(entry.image_size)
    path = cache_dir() / f"{name}-{entry.fingerprint()}.pt"
    if path.exists() and not retrain:
        model = _build_seeded(entry)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), train_split, test_split
    model = train(entry, train_split)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, train_split, test_split


def accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    with torch.no_grad():
        return (model(split[0]).argmax(-1) == split[1]).float().mean().item()
