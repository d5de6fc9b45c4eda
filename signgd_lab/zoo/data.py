"""The scikit-learn digits set (ships inside scikit-learn: no network) with a fixed split."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 0
TEST_FRACTION = 0.25


def load_digits_split(size: int = 8) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                              tuple[torch.Tensor, torch.Tensor]]:
    """((x_train, y_train), (x_test, y_test)); x of shape (N, 1, size, size) in [0, 1].

    The split is a fixed seeded stratified permutation (1347 train / 450 test images). With
    ``size > 8`` the 8x8 images are upsampled bilinearly.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION,
                                              random_state=SPLIT_SEED, stratify=y)

    def prep(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a).unsqueeze(1)  # (N, 1, 8, 8)
        if size != 8:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return t.contiguous()

    return (prep(x_tr), torch.from_numpy(y_tr)), (prep(x_te), torch.from_numpy(y_te))
