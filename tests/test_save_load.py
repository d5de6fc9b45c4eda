"""Converted networks of every recipe survive torch.save / torch.load and snn.save / load."""
from __future__ import annotations

import io
import pickle

import pytest
import torch

import signgd_lab as sl
from signgd_lab.conversion import ConversionError, SpikingNetwork

CASES = [("digits_cnn", "paper"), ("digits_cnn", "if"), ("digits_mlp", "extended"),
         ("digits_attention", "extended"), ("digits_attention", "paper")]


@pytest.mark.parametrize("name,dynamics", CASES)
def test_round_trip_gives_identical_outputs(zoo_cache, tmp_path, name, dynamics):
    model, (x_tr, _), (x_te, _) = zoo_cache(name)
    snn = sl.convert(model, x_tr[:128], dynamics=dynamics)
    expected = snn(x_te[:24], [4, 16])
    buf = io.BytesIO()
    torch.save(snn, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    snn.save(tmp_path / "snn.pt")
    reloaded = SpikingNetwork.load(tmp_path / "snn.pt")
    for other in (loaded, reloaded):
        assert other is not snn and list(other.neurons) == list(snn.neurons)
        assert torch.equal(other(x_te[:24], [4, 16]), expected)
        assert torch.equal(other.ann(x_te[:24]), snn.ann(x_te[:24]))
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temporary file


def test_extended_network_pickles_its_rescaled_targets(zoo_cache):
    model, (x_tr, _), _ = zoo_cache("digits_mlp")
    snn = sl.convert(model, x_tr[:64], dynamics="extended")
    rescaled = [m.simulated_target() for m in snn.neurons.values() if m.shape_scale is not None]
    assert rescaled, "the extended recipe rescales neurons"
    for target in rescaled:
        copy = pickle.loads(pickle.dumps(target))
        x = torch.linspace(-1, 1, target.scale.numel()).view_as(target.scale)
        assert torch.equal(copy.fn(x), target.fn(x))


def test_leaky_relu_target_pickles():
    target = sl.get_target("leaky_relu", slope=0.2)
    copy = pickle.loads(pickle.dumps(target))
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(copy.fn(x), torch.tensor([-0.2, 2.0]))


def test_unpicklable_user_target_names_the_fix(tmp_path):
    from signgd_lab.dynamics.targets import unregister_target

    sl.register_target("cube_lambda", lambda x: x**3)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
        snn = sl.convert(model, torch.randn(8, 4))
        next(iter(snn.neurons.values())).target = sl.get_target("cube_lambda")
        with pytest.raises(ConversionError, match="module-level function"):
            snn.save(tmp_path / "snn.pt")
        assert not list(tmp_path.iterdir())
    finally:
        unregister_target("cube_lambda")


def test_load_refuses_another_object(tmp_path):
    torch.save({"a": torch.ones(1)}, tmp_path / "x.pt")
    with pytest.raises(ConversionError, match="not a SpikingNetwork"):
        SpikingNetwork.load(tmp_path / "x.pt")
