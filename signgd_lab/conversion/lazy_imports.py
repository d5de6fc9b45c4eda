"""Classes and functions of optional packages (timm), looked up at conversion time, and only
once the user has imported the package.

A model can only hold a timm module, or a graph call a timm function, if timm is already
imported, so conversion never imports timm itself: while ``sys.modules`` has no ``timm``, every
timm lookup here is empty. ``import signgd_lab.conversion`` and converting a plain torch model
thus cost none of timm's import time (several seconds). Only timm's public names are used
(``timm.layers`` exports, public model modules).
"""
from __future__ import annotations

import importlib
import sys
from typing import Iterable


def loaded_object(dotted: str) -> object | None:
    """The object named ``dotted`` (``package.module.name``) when its top-level package is
    already imported; None while it is not, or when this version of the package lacks it."""
    module_name, _, attr = dotted.rpartition(".")
    if module_name.partition(".")[0] not in sys.modules:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # a module this version of the package does not have
        return None
    return getattr(module, attr, None)


def resolve_loaded(entries: Iterable[object]) -> tuple:
    """``entries`` with each string replaced by :func:`loaded_object` of it (dropped when
    that is None); other entries (classes, functions) are kept as they are."""
    out = []
    for entry in entries:
        obj = loaded_object(entry) if isinstance(entry, str) else entry
        if obj is not None:
            out.append(obj)
    return tuple(out)


def timm_notrace(kind: str) -> tuple:
    """What timm registered as not traceable: ``kind`` ``"modules"`` (classes kept as fx
    leaves) or ``"functions"`` (kept whole by fx autowrap); empty while timm is not imported."""
    getter = loaded_object(f"timm.layers.get_notrace_{kind}")
    return tuple(getter()) if getter is not None else ()
