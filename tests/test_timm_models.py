"""Full-size timm architectures (random weights, nothing downloaded) convert completely."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import signgd_lab as sl

TIMM_MODELS = ["convnext_atto", "mixer_s16_224", "resmlp_12_224", "vit_tiny_patch16_224"]


@pytest.fixture(scope="module")
def converted():
    timm = pytest.importorskip("timm")
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False).eval()
            x = torch.randn(2, 3, 224, 224)
            cache[name] = (model, x, sl.convert(model, x))
        return cache[name]

    return get


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_model_converts_with_zero_unconverted_nonlinearities(name, converted):
    model, x, snn = converted(name)
    counts = sl.count_nonlinear(snn)
    assert counts["remaining"] == 0 and counts["neurons"] >= 10
    roles = {m.role for m in snn.neurons.values()}
    if name == "vit_tiny_patch16_224":
        assert {"attention-scores", "softmax-exp", "softmax-div", "attention-values"} <= roles
    assert {"layernorm-square", "layernorm-normalise"} <= roles or name == "resmlp_12_224"
    y = snn(x[:1], timestamps=[2])
    assert y.shape == (1, 1, 1000) and torch.isfinite(y).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_model_multistep_equals_stepwise(name, converted):
    model, x, snn = converted(name)
    ms = snn(x[:1], timestamps=[3, 6])
    sw = snn(x[:1], timestamps=[3, 6], mode="stepwise")
    assert (ms - sw).abs().max() <= 1e-5 * ms.abs().max().clamp_min(1.0)


def test_conversion_imports_timm_only_when_the_user_did():
    """``import signgd_lab.conversion`` and converting a plain torch model leave timm unimported
    (it costs seconds); timm's modules are still found when timm is imported afterwards."""
    code = """
import json, sys, torch
from torch import nn
import signgd_lab.conversion as conversion
after_import = "timm" in sys.modules
torch.manual_seed(0)
plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.GELU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.LayerNorm(36), nn.Linear(36, 3)).eval()
snn = conversion.convert(plain, torch.rand(16, 1, 8, 8))
snn(torch.rand(2, 1, 8, 8), [4])
after_plain = "timm" in sys.modules
from signgd_lab.zoo.timm_models import digits_convnext  # imports timm in the builder
timm_model = digits_convnext().eval()
def timm_leaves(gm):
    kinds = (type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module")
    return sorted({k.__name__ for k in kinds if k.__module__.startswith("timm.")})
traced = timm_leaves(conversion.trace(timm_model))
timm_snn = conversion.convert(timm_model, torch.rand(4, 1, 32, 32))
left = sorted({type(m).__name__ for m in timm_snn.modules() if type(m).__module__.startswith("timm.")})
print(json.dumps([after_import, after_plain, conversion.count_nonlinear(snn)["remaining"],
                  traced, left, conversion.count_nonlinear(timm_snn)["remaining"]]))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    after_import, after_plain, plain_left, traced, left, timm_left = \
        json.loads(res.stdout.splitlines()[-1])
    assert not after_import and not after_plain and plain_left == 0
    # timm imported after signgd_lab: its blocks are still kept whole, then all converted
    assert traced == ["GELU", "LayerNorm", "LayerNorm2d"]
    assert left == [] and timm_left == 0
