"""The scikit-learn digits set (ships inside scikit-learn: no network) with a fixed split."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 0
TEST_FRACTION = 0.25


def load_digits_split(size: int = 8) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                              tuple[torch.Tensor, torch.Tensor]]:
    """((x_train, y_train), (x_test, y_test)); x of shape (N, 1, size, size) in [0, 1].

    The split is a fixed seeded stratified permutation (1347 train / 450 test images). With
    ``size > 8`` the 8x8 images are upsampled bilinearly. The 8x8 split is cached next to the
    zoo's weights (keyed by scikit-learn's version, which made it), so a later process reads it
    instead of importing scikit-learn.
    """
    from .registry import cache_dir

    path = cache_dir() / f"digits-split-{SPLIT_SEED}-{TEST_FRACTION}-sklearn{_sklearn_version()}.pt"
    if path.exists():
        x_tr, y_tr, x_te, y_te = torch.load(path, weights_only=True)
    else:
        x_tr, y_tr, x_te, y_te = _split_with_sklearn()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save((x_tr, y_tr, x_te, y_te), tmp)
        os.replace(tmp, path)  # a complete file or none, also with concurrent writers

    def prep(t: torch.Tensor) -> torch.Tensor:
        t = t.unsqueeze(1)  # (N, 1, 8, 8)
        if size != 8:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return t.contiguous()

    return (prep(x_tr), y_tr), (prep(x_te), y_te)


def _sklearn_version() -> str:
    """The installed scikit-learn's version, read without importing it."""
    from importlib.metadata import version

    return version("scikit-learn")


def _split_with_sklearn() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the 8x8 digits, x (N, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION,
                                              random_state=SPLIT_SEED, stratify=y)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te),
            torch.from_numpy(y_te))
