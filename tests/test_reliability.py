"""Bad and hostile input, faults and reproducibility, end to end."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import signgd_lab as sl
from signgd_lab.conversion import ConversionError, heap, memory



def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


# ------------------------------------------------------------------ resource guard

def test_memory_guard_refuses_with_the_estimate(monkeypatch):
    snn = sl.convert(small_net(), torch.rand(8, 6))
    x = torch.rand(32, 6)
    needed = snn.estimate_memory((6,), 32, 16)
    assert needed > 0
    # state: x_hat and v of 12 ReLU neurons per sample
    assert snn.estimate_memory((6,), 64, 16) == 2 * needed
    monkeypatch.setattr(memory, "available_memory", lambda device: needed // 2)
    with pytest.raises(ConversionError, match=r"needs about .* GiB .*allow_large=True"):
        snn(x, [16], block_steps=16)
    assert snn(x, [16], block_steps=16, allow_large=True).shape == (1, 32, 3)
    # the same run in batch chunks fits, and gives the same outputs
    chunked = snn(x, [16], block_steps=16, batch_chunk=8)
    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    assert torch.equal(chunked, snn(x, [16], block_steps=16))
    with pytest.raises(ConversionError, match="batch_chunk must be a positive integer"):
        snn(x, [16], batch_chunk=0)


@pytest.mark.skipif(not heap.malloc_tuning_wanted(),
                    reason="malloc tuning applies to Linux with glibc only (or is switched off)")
def test_a_run_sets_the_malloc_thresholds_once(monkeypatch):
    monkeypatch.setattr(heap, "_state", {})
    calls = []
    monkeypatch.setattr(heap, "_mallopt", lambda p, v: calls.append((p, v)) or True)
    snn = sl.convert(small_net(), torch.rand(8, 6))
    snn(torch.rand(4, 6), [4])
    snn(torch.rand(4, 6), [4])
    assert calls == [(-3, 32 * 2**20), (-1, 512 * 2**20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert heap.retain_freed_memory() is True


@pytest.mark.parametrize("env", [{"SIGNGD_LAB_MALLOC_TUNING": "0"},
                                 {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_malloc_is_left_alone_when_asked(env, monkeypatch):
    monkeypatch.setattr(heap, "_state", {})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(heap, "_mallopt", lambda p, v: pytest.fail("mallopt was called"))
    snn = sl.convert(small_net(), torch.rand(8, 6))
    snn(torch.rand(4, 6), [4])
    assert heap.retain_freed_memory() is False


# ------------------------------------------------------------------ dtypes and devices

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_refused_clearly(dtype):
    with pytest.raises(ConversionError, match="not supported.*model.float\\(\\)"):
        sl.convert(small_net().to(dtype), torch.rand(8, 6, dtype=dtype))


def test_half_precision_input_to_a_float_network_is_converted():
    snn = sl.convert(small_net(), torch.rand(8, 6))
    x = torch.rand(4, 6)
    assert torch.allclose(snn(x.half(), [8]), snn(x.half().float(), [8]))


def test_model_on_several_devices_is_refused():
    net = small_net()
    net[2].to("meta")
    with pytest.raises(ConversionError, match="several devices"):
        sl.convert(net, torch.rand(8, 6))


def test_calibration_moves_to_the_model_dtype():
    snn = sl.convert(small_net().double(), torch.rand(8, 6))  # float32 calibration, float64 model
    assert snn.dtype == torch.float64


# ------------------------------------------------------------------ reproducibility

def test_same_inputs_same_outputs_bit_for_bit(zoo_cache):
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_mlp")
    a = sl.convert(model, x_tr[:128])(x_te[:16], [8, 64])
    b = sl.convert(model, x_tr[:128])(x_te[:16], [8, 64])
    assert torch.equal(a, b)


def test_zoo_training_is_seeded(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGNGD_LAB_CACHE", str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = sl.zoo.load("digits_mlp", retrain=True)[0].state_dict()
    assert torch.equal(torch.rand(4), expected)  # training left the caller's random state alone
    second = sl.zoo.load("digits_mlp", retrain=True)[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("load", [
    lambda: sl.zoo.load("digits_mlp"),
    lambda: sl.zoo.load_model("digits_mlp", seed=7),
    lambda: sl.zoo.load_model("torch.nn:Identity", seed=7),
    lambda: sl.zoo.resolve_model("resnet18", samples=2, calibration_samples=2, seed=7),
], ids=["zoo.load", "load_model(zoo)", "load_model(factory)", "resolve_model(timm)"])
def test_loading_a_model_leaves_the_callers_random_state_alone(zoo_cache, load):
    zoo_cache("digits_mlp")  # trained (and cached) before, so load() reads the cache
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    load()
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.notebook
# ------------------------------------------------------------------ fuzzing

@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sl.list_targets() + ["nope", ""]),
       st.lists(st.integers(0, 4), min_size=0, max_size=3),
       st.sampled_from([torch.float32, torch.float64, torch.int64]),
       st.integers(-2, 40), st.booleans())
def test_neuron_api_never_fails_obscurely(target, shape, dtype, T, pair):
    x = torch.randn(tuple(shape)).to(dtype) if dtype != torch.int64 else torch.randint(-3, 3, tuple(shape))
    inputs = (x, x.abs() + 0.5) if pair else x
    refusal = _expected_refusal(target, T, 2 if pair else 1)
    if refusal is not None:  # only this named refusal passes; any other exception fails
        with pytest.raises(ValueError, match=re.escape(refusal)):
            sl.simulate_neuron(target, inputs, T)
        return
    tr = sl.simulate_neuron(target, inputs, T)  # valid arguments: it must run
    assert tr.v.shape == (T, *shape) and torch.isfinite(tr.v).all()


def _expected_refusal(target: str, T: int, given: int) -> str | None:
    """How simulate_neuron must refuse these arguments, naming what is wrong (None: it runs)."""
    if T < 1:
        return f"T must be a positive integer number of time-steps, got {T!r}"
    if target not in sl.list_targets():
        return f"unknown target {target!r}"
    arity = sl.get_target(target).arity
    if arity != given:
        return f"target {target!r} takes {arity} input(s) but {given} were given"
    return None


class RandomNet(nn.Module):
    """A small network assembled from supported ops."""

    def __init__(self, blocks: list[str], head: str, seed: int) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        torch.manual_seed(seed)
        layers, channels = [nn.Conv2d(1, 4, 3, padding=1)], 4
        for b in blocks:
            layers.append({"relu": nn.ReLU(), "gelu": nn.GELU(), "leaky": nn.LeakyReLU(0.2),
                           "bn_conv": nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
                           "ln": LayerNorm2d(4), "pool": nn.MaxPool2d(3, 1, 1),
                           "avg": nn.AvgPool2d(3, 1, 1)}[b])
        self.body = nn.Sequential(*layers)
        self.fc1 = nn.Linear(channels * 36, 8)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "ln": nn.LayerNorm(8)}[head]
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        h = self.body(x)
        h = h + torch.relu(h)  # a residual branch
        return self.fc2(self.act(self.fc1(h.flatten(1))))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["relu", "gelu", "leaky", "bn_conv", "ln", "pool", "avg"]),
                min_size=1, max_size=4),
       st.sampled_from(["relu", "gelu", "ln"]), st.integers(0, 10_000))
def test_conversion_of_random_supported_architectures(blocks, head, seed):
    model = RandomNet(blocks, head, seed).eval()
    torch.manual_seed(seed)
    calib, x = torch.rand(64, 1, 6, 6), torch.rand(8, 1, 6, 6)
    ref = model(x)
    for dynamics in ("paper", "extended"):
        snn = sl.convert(model, calib, dynamics=dynamics)
        assert sl.count_nonlinear(snn)["remaining"] == 0
        y = snn(x, [8, 256])
        assert torch.isfinite(y).all()
    assert torch.allclose(snn.ann(x), ref, atol=1e-4, rtol=1e-3)  # extended keeps the ANN exactly
    err = [((o - ref).norm() / ref.norm().clamp_min(1e-6)).item() for o in y]
    assert err[1] < err[0], (blocks, head, err)


# ------------------------------------------------------------------ report faults

def _prepare_previous_report(root: Path) -> Path:
    out = root / "reports"
    out.mkdir(parents=True)
    (out / "index.html").write_text("previous good report")
    return out


@pytest.mark.notebook
def test_killed_kernel_keeps_the_previous_report(tmp_path, monkeypatch):
    from signgd_lab import report

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    nb = nbformat.read(report.NOTEBOOK_DIR / "01_neuron_as_optimizer.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    nbformat.write(nb, nb_dir / "01_neuron_as_optimizer.ipynb")
    monkeypatch.setattr(report, "NOTEBOOK_DIR", nb_dir)
    out = _prepare_previous_report(tmp_path)
    with pytest.raises(report.ReportError, match="(?s)01_neuron_as_optimizer.*DeadKernelError.*partial output kept in"):
        report.run_report(report.ReportConfig(notebooks=["01"]).quick(), out, log=lambda _: None)
    assert (out / "index.html").read_text() == "previous good report"


@pytest.mark.notebook
def test_sigint_keeps_the_previous_report(tmp_path):
    out = _prepare_previous_report(tmp_path)
    exe = Path(sys.executable).parent / "signgd-lab"
    # the default SIGINT action in the child even where this test runs with SIGINT ignored
    # (a background job inherits that, and Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([str(exe), "report", "--out", str(out), "--notebooks", "04"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".reports.partial-*")):
        time.sleep(0.2)
    time.sleep(3)  # the kernel is running the notebook now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "partial output kept in" in err and "untouched" in err
    assert (out / "index.html").read_text() == "previous good report"


def test_empty_dataloader_is_refused():
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.empty(0, 6)), batch_size=4)
    with pytest.raises(ConversionError, match="calibration data is empty"):
        sl.convert(small_net(), empty)


@pytest.mark.parametrize("call", [lambda: sl.zoo.load("digits_gpt"),
                                  lambda: sl.zoo.resolve_model("not_a_model_anywhere")])
def test_unknown_model_names_are_refused(call):
    with pytest.raises(ValueError, match="unknown (zoo )?model"):
        call()
