"""Neuron dynamics against the equations of docs/theory.md, sections 1-2."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import signgd_lab as sl
from signgd_lab.dynamics import get_target

X = torch.linspace(-1.0, 1.0, 201)


def scalar_signgd(g, fires_on_tie, x_values, T, lr0=0.15, gamma=0.95, rule=None):
    """The signGD equations on Python floats, input presented directly (x_hat_t = x)."""
    v, out = 0.0, []
    for t in range(1, T + 1):
        eta = lr0 * gamma ** (t - 1)
        if rule is not None:
            s = rule(v, *x_values)
        else:
            target = g(*x_values)
            s = v >= target if fires_on_tie else v > target
        v = v - eta * (2 * float(s) - 1)
        out.append(v)
    return out


def test_first_steps_by_hand_relu_and_ties():
    # relu, x = 0.5: v0 = 0 < 0.5 -> no spike, v1 = +0.15, v2 = 0.15 + 0.1425
    tr = sl.simulate_neuron("relu", torch.tensor([0.5, -0.3], dtype=torch.float64), 3)
    assert tr.spikes[:2, 0].tolist() == [0.0, 0.0]
    assert tr.v[:2, 0].tolist() == pytest.approx([0.15, 0.2925])
    # relu, x = -0.3: target 0 and v0 = 0 is a tie, which fires for ReLU -> v1 = -0.15
    assert tr.spikes[0, 1].item() == 1.0 and tr.v[0, 1].item() == pytest.approx(-0.15)
    assert tr.v[1, 1].item() == pytest.approx(-0.15 + 0.1425)
    # leaky_relu at x = 0: the same tie does not fire -> v1 = +0.15
    lk = sl.simulate_neuron("leaky_relu", torch.tensor([0.0]), 1)
    assert lk.spikes[0, 0].item() == 0.0 and lk.v[0, 0].item() == pytest.approx(0.15)


def test_first_steps_by_hand_if_neuron():
    # x = 0.6: eta1 = 1/2 -> x_hat1 = 0.3 > v0 = 0 fires, v1 = 0.5
    #          eta2 = 1/3 -> x_hat2 = 0.4 < v1 = 0.5 silent, v2 = 1/3
    tr = sl.simulate_if_neuron(torch.tensor([0.6], dtype=torch.float64), 2)
    assert tr.x_hat[:, 0].tolist() == pytest.approx([0.3, 0.4])
    assert tr.spikes[:, 0].tolist() == [1.0, 0.0]
    assert tr.v[:, 0].tolist() == pytest.approx([0.5, 1 / 3])


UNARY = {
    "relu": (lambda x: max(x, 0.0), True),
    "leaky_relu": (lambda x: x if x >= 0 else 0.1 * x, False),
    "gelu": (lambda x: x / (1 + math.exp(-1.702 * x)), False),
    "gelu_erf": (lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))), False),
    "abs": (abs, False),
    "square": (lambda x: x * x, True),
    "exp": (math.exp, True),
    "silu": (lambda x: x / (1 + math.exp(-x)), False),
    "sigmoid": (lambda x: 1 / (1 + math.exp(-x)), False),
    "tanh": (math.tanh, False),
    "softplus": (lambda x: math.log1p(math.exp(x)), False),
}
BINARY = {
    "max": (max, False, None),
    "div": (lambda a, b: a / b, False, None),
    "mul": (lambda a, b: a * b, True, None),
    "rsqrt_div": (None, False, lambda v, a, b: math.sqrt(b) * v > a),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_targets_follow_the_equations(name):
    g, tie = UNARY[name]
    xs = [-0.9, -0.25, 0.0, 0.4, 1.1]
    tr = sl.simulate_neuron(name, torch.tensor(xs, dtype=torch.float64), 40)
    for i, x in enumerate(xs):
        assert tr.v[:, i].tolist() == pytest.approx(scalar_signgd(g, tie, (x,), 40), abs=1e-12)
    assert get_target(name).tie_fires is tie


def test_log_target_follows_the_equations():
    """log (log-softmax's normaliser) on its domain x >= 1: fires on ties, like exp."""
    xs = [1.0, 1.5, 3.0, 7.0]
    tr = sl.simulate_neuron("log", torch.tensor(xs, dtype=torch.float64), 40)
    for i, x in enumerate(xs):
        assert tr.v[:, i].tolist() == pytest.approx(scalar_signgd(math.log, True, (x,), 40), abs=1e-12)
    assert abs(tr.v[-1, 3].item() - math.log(7.0)) < 0.02


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_targets_follow_the_equations(name):
    g, tie, rule = BINARY[name]
    a = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    b = torch.tensor([0.6, 0.4, 1.3], dtype=torch.float64)
    tr = sl.simulate_neuron(name, (a, b), 40)
    for i in range(3):
        ref = scalar_signgd(g, tie, (a[i].item(), b[i].item()), 40, rule=rule)
        assert tr.v[:, i].tolist() == pytest.approx(ref, abs=1e-12)
    assert tr.x_hat_inputs[1].shape == (40, 3)


@pytest.mark.parametrize("T", [16, 64, 256])
def test_if_rate_converges_to_relu1(T):
    x = torch.linspace(-0.5, 1.5, 401)
    tr = sl.simulate_if_neuron(x, T)
    err = (tr.v[-1] - x.clamp(0, 1)).abs().max().item()
    assert err <= 2.5 / T
    # the rate is the spike count over t + 1
    assert torch.allclose(tr.v[-1], tr.spikes.sum(0) / (T + 1))


def test_leaky_if_is_an_ema_of_spikes():
    tr = sl.simulate_if_neuron(torch.tensor([0.3]), 200, schedule="constant", tau=10.0)
    assert abs(tr.v[-1].item() - 0.3) < 0.1  # EMA coding: error of order 1/tau
    assert tr.etas[0].item() == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "abs", "gelu"])
def test_signgd_error_at_T64_below_two_percent(name):
    tr = sl.simulate_neuron(name, X, 64, sl.SignGDDynamics(lr0=0.15, gamma=0.95))
    assert tr.max_error()[-1].item() < 0.02


def test_error_falls_with_T():
    tr = sl.simulate_neuron("gelu", X, 128)
    me = tr.max_error()
    assert me[127] < me[31] < me[7]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["relu", "gelu", "abs", "square", "exp", "tanh"]),
       st.floats(-6, 6, allow_nan=False), st.floats(0.01, 0.5), st.floats(0.5, 0.99),
       st.integers(1, 200))
def test_output_never_leaves_the_step_size_sum(name, x, lr0, gamma, T):
    dyn = sl.SignGDDynamics(lr0=lr0, gamma=gamma)
    tr = sl.simulate_neuron(name, torch.tensor([x], dtype=torch.float64), T, dyn)
    partial = torch.cumsum(tr.etas, 0)
    assert (tr.v[:, 0].abs() <= partial + 1e-12).all()
    assert (tr.v.abs() <= dyn.output_bound + 1e-12).all()


def test_float_encoder_gain_and_x_hat():
    tr = sl.simulate_neuron("relu", torch.tensor([1.0], dtype=torch.float64), 2000, encoding="float")
    gain = 1 - math.prod(1 - 0.15 * 0.95 ** (t - 1) for t in range(1, 2001))
    assert tr.x_hat[-1, 0].item() == pytest.approx(gain, abs=1e-9)
    assert gain == pytest.approx(0.956, abs=1e-3)
    assert tr.x_hat[0, 0].item() == pytest.approx(0.15)  # f_1 = eta_1 x


@pytest.mark.parametrize("name", ["relu", "gelu", "div"])
def test_float32_and_float64_agree(name):
    xs = (X + 2.0, X.flip(0) + 2.0) if name == "div" else X
    t32 = sl.simulate_neuron(name, xs, 64)
    x64 = tuple(x.double() for x in xs) if isinstance(xs, tuple) else xs.double()
    t64 = sl.simulate_neuron(name, x64, 64)
    assert t32.v.dtype == torch.float32 and t64.v.dtype == torch.float64
    # a spike can flip where v sits within rounding of the target, moving v by ~2 eta there
    mismatch = (t32.v.double() - t64.v).abs() > 1e-4
    assert mismatch.float().mean() < 0.02
    assert (t32.error[-1].abs().max() - t64.error[-1].abs().max()).abs() < 5e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    cpu = sl.simulate_neuron("gelu", X.double(), 64)
    gpu = sl.simulate_neuron("gelu", X.double().cuda(), 64)
    assert gpu.v.is_cuda
    assert torch.allclose(cpu.v, gpu.v.cpu(), atol=1e-9)


def test_register_target_and_use_it():
    sl.register_target("cube_test", lambda x: x**3, overwrite=True)
    try:
        assert "cube_test" in sl.list_targets()
        tr = sl.simulate_neuron("cube_test", torch.linspace(-1, 1, 11), 128)
        assert tr.max_error()[-1] < 0.01
    finally:
        from signgd_lab.dynamics import unregister_target
        unregister_target("cube_test")
    assert "cube_test" not in sl.list_targets()


def test_leaky_relu_slope_parameter():
    tr = sl.simulate_neuron("leaky_relu", torch.tensor([-0.8]), 100, slope=0.3)
    assert tr.target_value.item() == pytest.approx(-0.24)
    assert tr.v[-1].item() == pytest.approx(-0.24, abs=0.01)


@pytest.mark.parametrize("call,message", [
    (lambda: sl.simulate_neuron("relu", X, 0), "positive integer"),
    (lambda: sl.simulate_neuron("relu", X, -5), "positive integer"),
    (lambda: sl.simulate_neuron("swish2", X, 8), "unknown target"),
    (lambda: sl.simulate_neuron("max", X, 8), "takes 2 input"),
    (lambda: sl.simulate_neuron("relu", (X, X), 8), "takes 1 input"),
    (lambda: sl.simulate_neuron("relu", torch.tensor([0.0, float("nan")]), 8), "NaN"),
    (lambda: sl.simulate_if_neuron(torch.tensor([float("inf")]), 8), "NaN or Inf"),
    (lambda: sl.simulate_neuron("relu", X, 8, encoding="spikes"), "unknown encoding"),
    (lambda: sl.register_target("relu", torch.relu), "already exists"),
    (lambda: sl.register_target("bad_arity", torch.relu, arity=3), "arity"),
    (lambda: sl.SignGDDynamics(tie_rule="sometimes"), "tie_rule"),
])
def test_nonsense_is_refused_clearly(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_tie_rule_override():
    fire = sl.simulate_neuron("leaky_relu", torch.tensor([0.0]), 1, sl.SignGDDynamics(tie_rule="fire"))
    assert fire.spikes[0, 0].item() == 1.0
