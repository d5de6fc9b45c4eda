"""Full-size timm architectures (random weights, nothing downloaded) convert completely."""
from __future__ import annotations

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
