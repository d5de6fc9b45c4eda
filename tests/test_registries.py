"""The four registries (targets, op handlers, affine ops, zoo models) refuse a name that is
already taken unless ``overwrite=True``, which replaces the entry."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

from signgd_lab import zoo
from signgd_lab.conversion import handlers
from signgd_lab.conversion.handlers import (AffineOp, OpHandler, get_handler, list_handlers,
                                            register_affine, register_handler,
                                            unregister_affine, unregister_handler)
from signgd_lab.dynamics.targets import (get_target, list_targets, register_target,
                                         unregister_target)


@dataclass(frozen=True)
class Registry:
    """How a test adds, reads back and removes one entry of a registry.

    ``add(name, version, overwrite)`` registers an entry that records ``version``;
    ``version(name)`` reads it back from the registry; ``builtin`` is a name the package
    registers itself (None when the registry starts empty).
    """

    add: Callable[[str, int, bool], object]
    version: Callable[[str], int]
    names: Callable[[], list[str]]
    remove: Callable[[str], None]
    builtin: str | None


def _no_rewrite(emit, node, recipe):  # never called: the dummy handler matches nothing
    raise AssertionError("the dummy handler must not run")


REGISTRIES = {  # keyed by the word each registry's error message uses for its entries
    "target": Registry(
        add=lambda name, v, overwrite: register_target(
            name, lambda x: x * v, description=f"v{v}", overwrite=overwrite),
        version=lambda name: int(get_target(name).description[1:]),
        names=list_targets, remove=unregister_target, builtin="relu"),
    "handler": Registry(
        add=lambda name, v, overwrite: register_handler(
            OpHandler(name, "neuron", _no_rewrite, f"v{v}"), overwrite=overwrite),
        version=lambda name: int(get_handler(name).summary[1:]),
        names=list_handlers, remove=unregister_handler, builtin="gelu"),
    "affine op": Registry(
        add=lambda name, v, overwrite: register_affine(AffineOp(name, max_dynamic=v),
                                                       overwrite=overwrite),
        version=lambda name: handlers._AFFINE[name].max_dynamic,  # no public getter
        names=lambda: list(handlers._AFFINE), remove=unregister_affine, builtin=None),
    "zoo model": Registry(
        add=lambda name, v, overwrite: zoo.register_model(
            zoo.ZooEntry(name, nn.Identity, description=f"v{v}"), overwrite=overwrite),
        version=lambda name: int(zoo.get_entry(name).description[1:]),
        names=zoo.list_models, remove=zoo.unregister_model, builtin="digits_mlp"),
}


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_a_taken_name_needs_overwrite(kind):
    reg = REGISTRIES[kind]
    name = f"dummy_{kind.replace(' ', '_')}_for_registry_test"
    assert name not in reg.names()
    try:
        reg.add(name, 1, False)
        assert name in reg.names() and reg.version(name) == 1
        message = f"{kind} {name!r} already exists; pass overwrite=True to replace it"
        with pytest.raises(ValueError, match=re.escape(message)):
            reg.add(name, 2, False)
        assert reg.version(name) == 1  # the refused registration changed nothing
        reg.add(name, 2, True)
        assert reg.version(name) == 2
        assert reg.names().count(name) == 1
    finally:
        reg.remove(name)
    assert name not in reg.names()


@pytest.mark.parametrize("kind", sorted(k for k, r in REGISTRIES.items() if r.builtin))
def test_a_builtin_name_is_refused_without_overwrite(kind):
    reg = REGISTRIES[kind]
    with pytest.raises(ValueError, match=f"{reg.builtin}'? already exists; pass overwrite=True"):
        reg.add(reg.builtin, 3, False)
    assert reg.builtin in reg.names()


def test_builtin_target_still_works_after_a_refused_overwrite():
    with pytest.raises(ValueError, match="already exists"):
        register_target("relu", torch.abs)
    assert torch.equal(get_target("relu")(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
