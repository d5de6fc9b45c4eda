"""Fused CPU kernels give bit-for-bit the results of the plain torch path."""
from __future__ import annotations

import pytest
import torch

import signgd_lab as sl
from signgd_lab.dynamics import NeuronState, SignGDNeuron, get_target, kernels
from signgd_lab.dynamics.neurons import Drive, ProductSumNeurons

pytestmark = pytest.mark.skipif(not kernels.ENABLED, reason="numba kernels unavailable or disabled")

ETAS = sl.SignGDDynamics().etas(48)


def population(target_name: str, shapes: list[tuple[int, ...]], seed: int, **params):
    """A neuron population with random currents and offsets for each input arm."""
    g = torch.Generator().manual_seed(seed)
    target = get_target(target_name, **params)
    drives = [Drive(torch.rand(48, *s, generator=g) * 2 - 0.5, torch.rand(1, *s[1:], generator=g))
              for s in shapes]
    x0 = [torch.rand(*s, generator=g) + (0.5 if i == 1 else 0.0) for i, s in enumerate(shapes)]
    return target, drives, x0


def run(target, drives, x0, enabled: bool, monkeypatch, blocks=(48,)):
    monkeypatch.setattr(kernels, "ENABLED", enabled)
    shape = torch.broadcast_shapes(*(x.shape for x in x0))
    state = NeuronState(tuple(x.clone() for x in x0), torch.zeros(shape))
    out, start = [], 0
    for size in blocks:
        sub = tuple(Drive(d.current[start:start + size], d.offset) for d in drives)
        out.append(SignGDNeuron(target).run(state, sub, ETAS[start:start + size]))
        start += size
    return torch.cat(out), state


CASES = [
    ("relu", [(4, 3, 5)], {}), ("leaky_relu", [(4, 7)], {"slope": 0.2}), ("abs", [(4, 7)], {}),
    ("square", [(4, 7)], {}), ("max", [(4, 6), (4, 6)], {}), ("mul", [(4, 6), (4, 6)], {}),
    ("div", [(4, 6), (4, 6)], {}), ("rsqrt_div", [(4, 6), (4, 6)], {}),
    ("div", [(4, 3, 6), (4, 3, 1)], {}),        # broadcast second input: estimates + g kernel
    ("rsqrt_div", [(4, 3, 6), (4, 3, 1)], {}),  # broadcast: estimates + ratio-rule kernel
    ("gelu", [(4, 7)], {}), ("exp", [(4, 7)], {}), ("gelu_erf", [(4, 7)], {}),
]


@pytest.mark.parametrize("name,shapes,params", CASES, ids=[f"{c[0]}-{len(c[1][-1])}d" for c in CASES])
def test_kernels_match_torch_bit_for_bit(name, shapes, params, monkeypatch):
    target, drives, x0 = population(name, shapes, seed=len(name), **params)
    fused, s1 = run(target, drives, x0, True, monkeypatch)
    plain, s2 = run(target, drives, x0, False, monkeypatch)
    assert torch.equal(fused, plain)
    assert torch.equal(s1.v, s2.v) and all(torch.equal(a, b) for a, b in zip(s1.x_hat, s2.x_hat))
    # the block length does not change the arithmetic either
    blocked, _ = run(target, drives, x0, True, monkeypatch, blocks=(1, 7, 40))
    assert torch.equal(blocked, plain)


def test_product_kernel_matches_torch(monkeypatch):
    g = torch.Generator().manual_seed(0)
    a0, b0 = torch.rand(2, 3, 5, 4, generator=g), torch.rand(2, 3, 4, 6, generator=g)
    drives = (Drive(torch.rand(48, 2, 3, 5, 4, generator=g), torch.rand(1, 3, 5, 4, generator=g)),
              Drive(torch.rand(48, 2, 3, 4, 6, generator=g), torch.rand(1, 3, 4, 6, generator=g)))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        state = NeuronState((a0.clone(), b0.clone()), torch.zeros(2, 3, 5, 4, 6))
        results.append((ProductSumNeurons(get_target("mul")).run(state, drives, ETAS), state.v))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][0].max() <= 4  # counts over K = 4 products


def test_network_outputs_identical_with_and_without_kernels(zoo_cache, monkeypatch):
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_attention")
    snn = sl.convert(model, x_tr[:128], dynamics="extended")
    fused = snn(x_te[:8], [16, 64])
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert torch.equal(snn(x_te[:8], [16, 64]), fused)


@pytest.mark.slow
def test_compiled_step_matches_plain_step():
    """The torch.compile step used on CUDA, checked on CPU (slow: one compilation)."""
    g = torch.Generator().manual_seed(1)
    v, target = torch.rand(64, generator=g), torch.rand(64, generator=g)
    eta = torch.tensor(0.15)
    fused_v, fused_s = kernels.fused_step(v, target, eta, True)
    s = (v >= target).float()
    assert torch.equal(fused_s, s) and torch.equal(fused_v, v - eta * (2 * s - 1))
