"""convert() and SpikingNetwork: API, correction theory, errors, zoo models."""
from __future__ import annotations


import pytest
import torch
from torch import nn

import signgd_lab as sl
from signgd_lab.conversion import ConversionError, Probe, count_nonlinear
from signgd_lab.zoo import list_models

from conftest import model_fingerprint


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.GELU(),
                         nn.Linear(8, 3)).eval()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_output_shape_anytime_and_reset():
    net = small_net()
    x = torch.rand(20, 6)
    snn = sl.convert(net, torch.rand(64, 6))
    y = snn(x, timestamps=[8, 64])
    assert y.shape == (2, 20, 3)
    y8 = snn(x, timestamps=[8])
    assert torch.equal(y8[0], y[0])  # anytime: T=8 from the long run equals a short run
    assert torch.equal(snn(x, timestamps=[8, 64]), y)  # state resets on every call


def test_correction_makes_input_estimate_the_affine_map_of_upstream_estimate():
    """docs/theory.md, section 3: x_hat_t of a neuron = A(v_t of the neurons feeding it)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.ReLU()).eval()
    snn = sl.convert(net, torch.rand(32, 4))
    first, second = list(snn.neurons)

    class Record(Probe):
        def __init__(self):
            self.v, self.x_hat = [], []

        def observer(self, name, module):
            if name == first:
                return lambda t, xh, v, s: self.v.append(v.clone())
            if name == second:
                return lambda t, xh, v, s: self.x_hat.append(xh[0].clone())
            return None

    rec = Record()
    x = torch.rand(3, 4)
    snn(x, timestamps=[30], probes=[rec])
    gm = snn.graph_module
    m1 = [b for n, b in gm.named_buffers() if n.startswith(first)][0]
    m2 = [b for n, b in gm.named_buffers() if n.startswith(second)][0]
    for t in (0, 9, 29):
        expected = (net[2](rec.v[t] * m1)) / m2  # A = scale-in of 2nd neuron o Linear o scale-out
        assert torch.allclose(rec.x_hat[t], expected, atol=1e-5)


def test_user_model_is_never_modified():
    net = small_net().train()
    before = model_fingerprint(net)
    with pytest.warns(UserWarning, match="training mode"):
        sl.convert(net, torch.rand(16, 6))
    assert model_fingerprint(net) == before and net.training


def test_if_mode_converts_relu_networks_and_refuses_others():
    torch.manual_seed(2)
    relu_net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(50, 6)
    snn = sl.convert(relu_net, x, dynamics="if")
    y = snn(x, timestamps=[16, 256])
    ref = relu_net(x)
    assert rel(y[1], ref) < rel(y[0], ref) and rel(y[1], ref) < 0.05
    with pytest.raises(ConversionError, match="gelu"):
        sl.convert(small_net(), x, dynamics="if")


def test_float64_model_gives_float64_network():
    net = small_net().double()
    snn = sl.convert(net, torch.rand(16, 6, dtype=torch.float64))
    assert snn(torch.rand(4, 6, dtype=torch.float64), [4]).dtype == torch.float64


def test_calibration_as_dataloader():
    ds = torch.utils.data.TensorDataset(torch.rand(40, 6), torch.zeros(40))
    snn = sl.convert(small_net(), torch.utils.data.DataLoader(ds, batch_size=8))
    assert snn(torch.rand(2, 6), [4]).shape == (1, 2, 3)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Hardshrink()

    def forward(self, x):
        return torch.erf(self.act(self.fc(x))).cumprod(-1)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


@pytest.mark.parametrize("make,args,message", [
    (Unsupported, (torch.rand(4, 4),), "3 op\\(s\\).*Hardshrink.*'act'.*erf.*cumprod"),
    (DataDependent, (torch.rand(4, 4),), "could not trace.*Hint"),
    (small_net, (torch.empty(0, 6),), "calibration data is empty"),
    (small_net, (torch.full((4, 6), float("nan")),), "NaN or Inf"),
    (small_net, ("not data",), "calibration must be a tensor"),
    (small_net, (torch.rand(4, 6), "spiky"), "unknown dynamics"),
])
def test_conversion_errors_are_clear(make, args, message):
    with pytest.raises(ConversionError, match=f"(?s){message}"):
        sl.convert(make().eval(), *args)


def test_nan_weights_are_refused():
    net = small_net()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ConversionError, match="0.weight"):
        sl.convert(net, torch.rand(4, 6))


@pytest.mark.parametrize("timestamps,message", [
    ([0, 8], ">= 1"), ([-3], ">= 1"), ([64, 8], "strictly increasing"), ([8, 8], "strictly"),
    ([2.5], "integers"), ([], "empty")])
def test_bad_timestamps(timestamps, message):
    snn = sl.convert(small_net(), torch.rand(8, 6))
    with pytest.raises(ConversionError, match=message):
        snn(torch.rand(2, 6), timestamps)


@pytest.mark.parametrize("x,message", [
    (torch.full((2, 6), float("nan")), "NaN"), (torch.ones(2, 6, dtype=torch.int64), "dtype"),
    (torch.rand(2, 7), "per-sample shape"), (torch.rand(0, 6), "no samples")])
def test_bad_network_input(x, message):
    snn = sl.convert(small_net(), torch.rand(8, 6))
    with pytest.raises(ConversionError, match=message):
        snn(x, [4])


# ------------------------------------------------------------------ zoo models

def test_paper_mode_cnn_accuracy_within_half_a_point(zoo_cache):
    model, (x_tr, _), (x_te, y_te) = zoo_cache("digits_cnn")
    snn = sl.convert(model, x_tr[:256])
    ann_acc = (model(x_te).argmax(-1) == y_te).float().mean().item()
    snn_acc = (snn(x_te, [64])[0].argmax(-1) == y_te).float().mean().item()
    assert abs(snn_acc - ann_acc) <= 0.005, (ann_acc, snn_acc)


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_converts_completely(name, zoo_cache):
    model, (x_tr, _), (x_te, _) = zoo_cache(name)
    snn = sl.convert(model, x_tr[:128])
    counts = count_nonlinear(snn)
    assert counts["remaining"] == 0 and counts["neurons"] > 0
    x = x_te[:32]
    ms = snn(x, [16, 64])
    sw = snn(x, [16, 64], mode="stepwise")
    assert (ms - sw).abs().max() <= 1e-5 * ms.abs().max()
    if name in ("digits_cnn", "digits_mlp"):
        ref = model(x)
        y = snn(x, [16, 128])
        assert rel(y[1], ref) < rel(y[0], ref)


def test_block_steps_follows_the_input_shape_not_the_last_run():
    snn = sl.convert(small_net(), torch.rand(8, 6))
    # 12 ReLU and 8 GELU neurons per sample; the budget is 3 * 2**20 = 3145728 neuron inputs
    # of all populations per block: a batch of 8192 reads 163840 per step, so 19 steps fit
    assert snn.block_steps((6,), 8192, 128) == 19  # before any run
    snn(torch.rand(2, 6), [4])
    assert snn.block_steps((6,), 8192, 128) == 19
    assert snn.block_steps((6,), 6144, 128) == 25
    assert snn.block_steps((6,), 64, 128) == 32  # never more than 32 steps
    assert snn.block_steps((6,), 64, 20) == 20  # nor more than the run
    assert snn.block_steps((6,), 10**6, 128) == 1  # never fewer than one step
    assert snn.block_steps((6,), 8192, 128, mode="stepwise") == 1
    assert [r["neuron"] for r in snn.replaced] == list(snn.neurons)
