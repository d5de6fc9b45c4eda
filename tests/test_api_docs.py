"""Every public function, class and method of the package has a docstring; neurons state their
update equations; imports point one way (dynamics <- conversion <- probes <- viz/report/cli)."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import signgd_lab

PACKAGE = Path(signgd_lab.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "signgd_lab."))


def public_objects():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{name}.{attr}", obj
                if inspect.isclass(obj):
                    for meth, fn in vars(obj).items():
                        if not meth.startswith("_") and (inspect.isfunction(fn) or isinstance(fn, property)):
                            yield f"{name}.{attr}.{meth}", fn


@pytest.mark.parametrize("module", MODULES)
def test_every_public_object_has_a_docstring(module):
    missing = [q for q, obj in public_objects() if q.startswith(module + ".")
               and q.count(".") - module.count(".") <= 2 and not inspect.getdoc(obj)]
    assert not missing, missing


def test_neuron_docstrings_state_their_equations():
    from signgd_lab.dynamics import IFNeuron, SignGDNeuron
    from signgd_lab.dynamics.neurons import ProductSumNeurons

    assert "v_t     = v_{t-1} - eta_t * (2 s_t - 1)" in SignGDNeuron.__doc__
    assert "s_t     = H(x_hat_t - v_{t-1})" in IFNeuron.__doc__
    assert "x_hat_t = x_hat_{t-1} - eta_t * (x_hat_{t-1} - I_t)" in IFNeuron.__doc__
    assert "a_hat[n, k] * b_hat[k, m]" in ProductSumNeurons.__doc__


LAYERS = {"dynamics": 0, "zoo": 0, "conversion": 1, "probes": 2, "evaluation": 2,
          "experiments": 3, "viz": 3,
          "report": 4, "cli": 5}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_imports_point_one_way():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        here = _layer(module)
        if here not in LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                there = _layer(target)
                if there in LAYERS and there != here and there != "zoo" and LAYERS[there] > LAYERS[here]:
                    bad.append(f"{module} imports {target}")
    assert not bad, bad
