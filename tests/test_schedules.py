import math

import pytest
import torch

from signgd_lab.dynamics import SCHEDULE_KINDS, Schedule, SignGDDynamics


def test_exponential_matches_closed_form_past_1023_steps():
    etas = Schedule("exponential", 0.15, 0.95).etas(2000, dtype=torch.float64)
    assert etas.shape == (2000,)
    for t in (1, 2, 64, 1024, 1500, 2000):
        assert etas[t - 1].item() == pytest.approx(0.15 * 0.95 ** (t - 1), rel=1e-12)


@pytest.mark.parametrize("kind,expected", [
    ("constant", lambda t: 0.2),
    ("inverse", lambda t: 1 / (t + 1)),
    ("inverse_sqrt", lambda t: 0.2 / math.sqrt(t)),
    ("polynomial", lambda t: 0.2 / t**0.7),
    ("exponential", lambda t: 0.2 * 0.9 ** (t - 1)),
])
def test_every_schedule_follows_its_formula(kind, expected):
    etas = Schedule(kind, lr0=0.2, gamma=0.9, power=0.7).etas(50, dtype=torch.float64)
    assert torch.allclose(etas, torch.tensor([expected(t) for t in range(1, 51)], dtype=torch.float64))


def test_sums_quoted_in_theory():
    sched = SignGDDynamics().as_schedule()
    for T, total in ((16, 1.68), (32, 2.42), (64, 2.89), (128, 2.996)):
        assert sched.total(T) == pytest.approx(total, abs=5e-3)
    assert sched.total() == pytest.approx(3.0)
    assert Schedule("inverse").total() == math.inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_caller(dtype):
    etas = Schedule().etas(8, device="cpu", dtype=dtype)
    assert etas.dtype == dtype and etas.device.type == "cpu"


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", None, True])
def test_bad_horizon_is_refused(bad):
    with pytest.raises(ValueError, match="positive integer"):
        Schedule().etas(bad)


def test_bad_schedule_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("cosine")
    with pytest.raises(ValueError, match="gamma"):
        Schedule("exponential", gamma=1.5)
    with pytest.raises(ValueError, match="lr0"):
        Schedule(lr0=float("nan"))
    assert set(SCHEDULE_KINDS) == {"constant", "inverse", "inverse_sqrt", "polynomial", "exponential"}
