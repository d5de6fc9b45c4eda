"""Soundness: every op pattern of the catalogue either converts (the extended SNN's relative
error at T=256 below 0.05 and below its error at T=16, the converted graph equal to the model
as an ANN) or raises a ConversionError that names the op; never a silent wrong answer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import signgd_lab as sl
from signgd_lab.conversion import AffineOp, ConversionError, OpHandler, register_affine
from signgd_lab.conversion.handlers import neuron, unregister_affine, unregister_handler
from soundness_catalogue import CATALOGUE, Pattern, timm_batchnorm_act, vec

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def torch_neuron_path():
    """The catalogue checks conversion, not the compiled kernels (tested against this torch
    path in test_kernels.py): without them ~90 tiny models run in under a minute instead of
    compiling a kernel per target and shape first."""
    from signgd_lab.dynamics import kernels

    saved = kernels.ENABLED
    kernels.ENABLED = False
    yield
    kernels.ENABLED = saved


_TIMM = timm_batchnorm_act()
PATTERNS = CATALOGUE + ([_TIMM] if _TIMM is not None else [])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-9)).item()


def build(p: Pattern) -> tuple[nn.Module, torch.Tensor]:
    """The seeded model (BatchNorm statistics randomised) and 64 inputs."""
    torch.manual_seed(0)
    model = p.make()
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(64, *p.shape)
    return model, x if p.positive else 2 * x - 1


def test_catalogue_has_at_least_60_patterns_with_unique_names():
    assert len(PATTERNS) >= 60
    assert len({p.name for p in PATTERNS}) == len(PATTERNS)


@pytest.mark.parametrize("p", PATTERNS, ids=[p.name for p in PATTERNS])
def test_pattern_converts_correctly_or_is_refused_by_name(p):
    model, x = build(p)
    try:
        snn = sl.convert(model, x, dynamics="extended")
    except ConversionError as exc:
        assert p.expect == "refuse", f"{p.name} was refused: {exc}"
        assert p.names in str(exc), f"the error does not name {p.names!r}: {exc}"
        return
    assert p.expect == "convert", f"{p.name} converted, but it should be refused"
    with torch.no_grad():
        ref = model(x[:8])
        assert rel(snn.ann(x[:8]), ref) < 1e-4  # the rewrite is exact on the ANN
    y = snn(x[:8], [16, 256])
    e16, e256 = rel(y[0], ref), rel(y[1], ref)
    assert e256 < 0.05 and e256 < e16, (p.name, e16, e256)


# ------------------------------------------------------------------ the audit itself

def test_audit_catches_a_wrong_user_affine_op():
    register_affine(AffineOp("erf_is_not_affine", functions=(torch.erf,)))
    try:
        model, x = build(Pattern("erf", vec(lambda m, a, b: torch.erf(a)), (6,)))
        with pytest.raises(ConversionError, match="(?s)erf_is_not_affine.*is not"):
            sl.convert(model, x, dynamics="extended")
    finally:
        unregister_affine("erf_is_not_affine")


def test_audit_accepts_a_right_user_affine_op():
    register_affine(AffineOp("fliplr", functions=(torch.fliplr,)))
    try:
        model, x = build(Pattern("fliplr", vec(lambda m, a, b: torch.relu(torch.fliplr(a))), (6,)))
        snn = sl.convert(model, x, dynamics="extended")
        assert rel(snn.ann(x), model(x)) < 1e-5
    finally:
        unregister_affine("fliplr")


def test_audit_catches_a_user_handler_that_leaves_a_product():
    def square_as_product(emit, node, recipe):  # wrong: x * x stays an ANN op on spike trains
        x = emit.proxy(node.args[0])
        return neuron(emit, node, "relu", x) * x

    sl.conversion.register_handler(OpHandler("bad_erf", "neuron", square_as_product, "wrong",
                                             functions=(torch.erf,)))
    try:
        model, x = build(Pattern("erf", vec(lambda m, a, b: torch.erf(a)), (6,)))
        with pytest.raises(ConversionError, match="(?s)product of 2 input-dependent"):
            sl.convert(model, x, dynamics="extended")
    finally:
        unregister_handler("bad_erf")


@pytest.mark.parametrize("dynamics", ["paper", "if"])
def test_audit_runs_for_every_preset(dynamics):
    model, x = build(Pattern("batch", vec(lambda m, a, b: torch.relu(a - a.mean(0))), (6,)))
    with pytest.raises(ConversionError, match="mean"):
        sl.convert(model, x, dynamics=dynamics)


def test_if_dynamics_refuse_a_non_relu_neuron_by_name():
    model, x = build(Pattern("hs", vec(lambda m, a, b: torch.nn.functional.hardswish(a)), (6,)))
    with pytest.raises(ConversionError, match="hardswish"):
        sl.convert(model, x, dynamics="if")
    model, x = build(Pattern("r6", vec(lambda m, a, b: torch.nn.functional.relu6(a)), (6,)))
    sl.convert(model, x, dynamics="if")  # relu6 is relu neurons only


def test_paper_mode_converts_the_new_ops_structurally():
    model, x = build(Pattern("g", vec(lambda m, a, b: torch.tanh(a) * torch.sigmoid(b)), (6,)))
    snn = sl.convert(model, x, dynamics="paper")
    assert rel(snn.ann(x), model(x)) < 1e-4
    assert sl.count_nonlinear(snn)["remaining"] == 0


# ------------------------------------------------------------------ regressions of the causes

def test_inplace_write_into_a_view_is_refused():
    def f(m, a, b):
        h = a + 0
        h[:, :4].relu_()  # changes h through shared memory
        return h

    model, x = build(Pattern("view", vec(f), (6,)))
    with pytest.raises(ConversionError, match="shares memory"):
        sl.convert(model, x, dynamics="extended")


def test_item_assignment_is_refused():
    def f(m, a, b):
        h = a + 0
        h[:, 0] = 0.0
        return h

    model, x = build(Pattern("setitem", vec(f), (6,)))
    with pytest.raises(ConversionError, match="item assignment"):
        sl.convert(model, x, dynamics="extended")


def test_linear_batchnorm1d_on_3d_input_is_not_folded_as_if_2d():
    from signgd_lab.conversion import trace
    from signgd_lab.conversion.passes import fuse_conv_bn

    p = next(p for p in PATTERNS if p.name == "linear_batchnorm1d_3d")
    model, x = build(p)
    fused = fuse_conv_bn(trace(model), x[:1])
    assert any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    with torch.no_grad():
        assert rel(fused(x), model(x)) < 1e-6


def test_a_subclass_that_overrides_forward_is_not_taken_for_its_parent():
    class DoubleReLU(nn.ReLU):
        def forward(self, x):
            return super().forward(x) * 2

    model, x = build(Pattern("sub", vec(lambda m, a, b: m.extra["act"](a),
                                        extra={"act": DoubleReLU()}), (6,)))
    snn = sl.convert(model, x, dynamics="extended")
    assert rel(snn.ann(x), model(x)) < 1e-5


class _MaskedAttention(nn.Module):
    """Causal self-attention with a mask buffer: SDPA (``fill`` None) or masked_fill."""

    def __init__(self, mask: torch.Tensor, fill: float | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.fill = nn.Linear(16, 48), fill
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, -1)
        if self.fill is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        scores = (q @ k.transpose(-2, -1) / 4).masked_fill(self.mask, self.fill)
        return torch.softmax(scores, -1) @ v


_CAUSAL = torch.tril(torch.ones(5, 5, dtype=torch.bool))


@pytest.mark.parametrize("model,match", [
    (_MaskedAttention(_CAUSAL), "boolean attention masks"),  # was added as 0/1: ANN off by 0.5
    (_MaskedAttention(~_CAUSAL, float("-inf")), "fills with -inf"),  # was NaN after scaling
], ids=["sdpa_bool_mask_buffer", "masked_fill_minus_inf"])
def test_masks_that_gave_silent_wrong_answers_are_refused_by_name(model, match):
    with pytest.raises(ConversionError, match=match):
        sl.convert(model.eval(), torch.randn(8, 5, 16), dynamics="extended")


def test_a_moderate_mask_value_converts_and_converges():
    model = _MaskedAttention(~_CAUSAL, -30.0).eval()
    x = torch.randn(8, 5, 16)
    snn = sl.convert(model, x, dynamics="extended")
    y = model(x).detach()
    err = [((o - y).norm() / y.norm()).item() for o in snn(x, [16, 256])]
    assert err[1] < 0.02 and err[1] < err[0], err


def test_batch_not_on_dim_0_is_refused_with_the_fix():
    class SequenceFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)  # (L, B, E): the batch on dim 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x)[0]

    with pytest.raises(ConversionError, match="batch_first=True"):
        sl.convert(SequenceFirst().eval(), torch.randn(5, 8, 16), dynamics="extended")
