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


def pytest_collection_modifyitems(config, items):
    """Files that execute notebooks or drive a browser first: pytest-xdist (``--dist loadfile``
    in the Makefile: a file's module fixtures run once) hands files out in this order, so the
    longest ones do not start last and keep one worker busy alone at the end."""
    heavy = {item.path for item in items
             if item.get_closest_marker("notebook") or item.get_closest_marker("browser")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: the order within a file stays


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
