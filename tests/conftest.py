"""Shared test set-up: one torch thread for stable numbers (and one numba thread in each
pytest-xdist worker), helpers for zoo models."""
from __future__ import annotations

import hashlib
import io
import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one numba thread per worker: the workers fill the cores
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of a model's state_dict bytes, module tree and training flags."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    flags = [m.training for m in model.modules()]
    return hashlib.sha256(buf.getvalue() + repr(model).encode() + repr(flags).encode()).hexdigest()


@pytest.fixture(scope="session")
def zoo_cache():
    """Loaded zoo models, trained once per machine (cached on disk) and once per session."""
    from signgd_lab import zoo

    loaded: dict[str, tuple] = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = zoo.load(name)
        return loaded[name]

    return get
