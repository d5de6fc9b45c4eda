"""Each conversion pass is a GraphModule -> GraphModule function that keeps the ANN's output."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from signgd_lab.conversion import Recipe, count_nonlinear, trace
from signgd_lab.conversion.neuron_ops import MatmulNeuronOp, NeuronOp
from signgd_lab.conversion.passes import (calibrate, decompose_attention, decompose_layernorm,
                                       decompose_maxpool, fuse_conv_bn, replace_nonlinearities,
                                       scale_activations)

EXACT = Recipe(name="exact", gelu="match", leaky_slope="module")


def neurons(gm):
    return [m for m in gm.modules() if isinstance(m, NeuronOp)]


def pooled_cnn(kernel, stride, padding, shape):
    """(model, x): conv 3x3 - ReLU - MaxPool2d(kernel, stride, padding) - linear in eval mode,
    and uniform inputs x of ``shape`` (B, 2, H, W), drawn from torch's global generator in
    that order (conv weights, x, linear weights)."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(kernel, stride, padding), nn.Flatten(), nn.LazyLinear(4))
    x = torch.rand(shape)
    model(x)  # sizes the linear layer
    return model.eval(), x


def same(gm, model, x, atol=1e-5):
    with torch.no_grad():
        return torch.allclose(gm(x), model(x), atol=atol, rtol=1e-4)


def test_fuse_conv_bn_and_purity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 36, 16), nn.BatchNorm1d(16)).eval()
    for bn in (model[1], model[5]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    gm = trace(model)
    code_before = gm.code
    fused = fuse_conv_bn(gm, torch.randn(1, 3, 8, 8))  # the example tells Linear's input is 2-D
    assert gm.code == code_before  # the input graph is untouched
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in fused.modules())
    assert same(fused, model, torch.randn(4, 3, 8, 8))


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)])
@pytest.mark.parametrize("functional", [False, True])
def test_maxpool_becomes_pairwise_max_chain(kernel, stride, padding, functional):
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(kernel, stride, padding)

        def forward(self, x):
            if functional:
                return F.max_pool2d(x, kernel, stride, padding)
            return self.pool(x)

    model = Pool().eval()
    x = torch.randn(2, 3, 9, 9)
    gm = decompose_maxpool(trace(model), Recipe(), x)
    assert same(gm, model, x, atol=0)
    assert same(decompose_maxpool(trace(model), Recipe(maxpool_padding="replicate"), x), model, x,
                atol=0)  # edge copies are exact padding for a maximum
    assert len(neurons(gm)) == 2 * (kernel - 1)
    assert all(n.target.name == "max" for n in neurons(gm))
    # the reference's order: the row offsets on full-width rows first, then the columns
    out = (9 + 2 * padding - kernel) // stride + 1
    shapes = []
    for m in neurons(gm):
        m.register_forward_hook(lambda mod, args, y: shapes.append(tuple(y.shape[-2:])))
    with torch.no_grad():
        gm(x)
    assert shapes == [(out, 9 + 2 * padding)] * (kernel - 1) + [(out, out)] * (kernel - 1)


class LN2d(nn.Module):
    def __init__(self):
        super().__init__()
        from timm.layers import LayerNorm2d
        self.norm = LayerNorm2d(6)
        nn.init.normal_(self.norm.weight)
        nn.init.normal_(self.norm.bias)

    def forward(self, x):
        return self.norm(x)


class FunctionalLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6))

    def forward(self, x):
        return F.layer_norm(x, (6,), self.w, None, 1e-5)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.LayerNorm(6), (4, 5, 6)),
    (lambda: nn.LayerNorm((5, 6)), (4, 5, 6)),
    (LN2d, (2, 6, 3, 3)),
    (FunctionalLN, (4, 6)),
])
def test_layernorm_decomposition(make, shape):
    torch.manual_seed(1)
    model = make().eval()
    x = torch.randn(*shape) * 3 + 1
    gm = decompose_layernorm(trace(model), Recipe())
    assert same(gm, model, x, atol=1e-5)
    assert sorted(n.target.name for n in neurons(gm)) == ["rsqrt_div", "square"]


class TimmAttn(nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        from timm.layers.attention import Attention
        self.attn = Attention(16, num_heads=4, qkv_bias=True)
        self.attn.fused_attn = fused

    def forward(self, x):
        return self.attn(x)


class SDPA(nn.Module):
    def forward(self, x):
        q, k, v = x, x * 0.5, x + 1
        return F.scaled_dot_product_attention(q, k, v)


class MHA(nn.Module):
    def __init__(self, batch_first: bool, need_weights: bool):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=batch_first)
        self.need_weights = need_weights

    def forward(self, x):
        if self.need_weights:
            out, w = self.mha(x, x, x)
            return out + w.sum(-1, keepdim=True)
        out, _ = self.mha(x, x, x, need_weights=False)
        return out


@pytest.mark.parametrize("make", [
    lambda: TimmAttn(True), lambda: TimmAttn(False), SDPA,
    lambda: MHA(True, False), lambda: MHA(False, False), lambda: MHA(True, True)],
    ids=["timm-fused", "timm-manual", "sdpa", "mha-bf", "mha-seq-first", "mha-weights"])
def test_attention_decomposition(make):
    torch.manual_seed(2)
    model = make().eval()
    x = torch.randn(3, 5, 16)
    gm = decompose_attention(trace(model), Recipe(), x)
    gm = replace_nonlinearities(gm, Recipe())
    assert same(gm, model, x, atol=1e-5)
    kinds = sorted(type(n).__name__ + ":" + n.target.name for n in neurons(gm))
    assert kinds == ["MatmulNeuronOp:mul", "MatmulNeuronOp:mul", "NeuronOp:div", "NeuronOp:exp"]


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.relu_inplace = nn.ReLU(inplace=True)
        self.beta = nn.Parameter(torch.randn(8))

    def forward(self, x):
        a = F.relu(self.fc(x)) + torch.relu(x) + self.relu_inplace(x * 2)
        b = F.gelu(a, approximate="tanh") + F.gelu(a)
        c = b.softmax(-1) + F.softmax(b, dim=-1)
        d = torch.addcmul(self.beta, c, x)  # product of two input-dependent tensors
        e = F.leaky_relu(d, 0.2) + x.relu_() * 0.5
        return e @ e.transpose(-2, -1) + torch.maximum(e, x).sum()


def test_functional_forms_all_become_neurons():
    torch.manual_seed(3)
    model = Functional().eval()
    x = torch.randn(2, 4, 8)
    ref = model(x.clone())
    gm = replace_nonlinearities(trace(model), EXACT)
    counts = count_nonlinear(gm)
    assert counts["remaining"] == 0
    names = sorted(n.target.name for n in neurons(gm))
    assert names.count("relu") == 4 and names.count("exp") == 2 and names.count("div") == 2
    assert {"gelu_tanh", "gelu_erf", "mul", "max", "leaky_relu(slope=0.2)"} <= set(names)
    assert any(isinstance(n, MatmulNeuronOp) for n in neurons(gm))
    with torch.no_grad():
        assert torch.allclose(gm(x.clone()), ref, atol=1e-4)


def test_paper_recipe_uses_reference_targets():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(approximate="tanh"), nn.LeakyReLU(0.3)).eval()
    names = sorted(n.target.name for n in neurons(replace_nonlinearities(trace(model), Recipe())))
    assert names == ["gelu", "leaky_relu"]  # sigmoid GELU, slope 0.1 (docs/theory.md, section 2)


def test_calibration_records_elementwise_relu_max_and_scaling_is_exact():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    gm = replace_nonlinearities(trace(model), Recipe())
    data = [torch.randn(16, 5), torch.randn(16, 5)]
    stats = calibrate(gm, data, Recipe())
    (name, s), = stats.items()
    with torch.no_grad():
        acts = torch.cat([torch.relu(model[0](b)) for b in data])
    assert torch.equal(s["out"], acts.amax(0))
    scaled = scale_activations(gm, stats, Recipe())
    expected = acts.amax(0)
    expected[expected <= 1e-5] = 1.0  # the reference's floor
    relu = scaled.get_submodule(name)  # the neuron module owns x / m -> relu -> * m
    assert torch.equal(relu.in_scale0, expected) and torch.equal(relu.out_scale, expected)
    assert gm.get_submodule(name).in_scale0 is None  # the pass's input is left as it was
    assert scaled.code == gm.code  # the graph keeps its shape
    x = torch.randn(8, 5)
    assert same(scaled, model, x, atol=1e-6)
    with torch.no_grad():  # exactly the division, the target and the multiplication
        hidden = model[0](x)
        assert torch.equal(relu(hidden), torch.relu(hidden / expected) * expected)


EXTENDED_CASES = {
    "gelu-mlp": lambda: nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 8), nn.SiLU(),
                                      nn.LayerNorm(8), nn.Linear(8, 3)),
    "attention": lambda: MHA(True, False),
    "cnn": lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.LeakyReLU(0.2), nn.MaxPool2d(2)),
}


@pytest.mark.parametrize("case", sorted(EXTENDED_CASES))
def test_extended_normalisation_keeps_the_ann_and_bounds_every_neuron(case):
    """Every neuron's ANN output lies within the signGD range after the extended rewrite."""
    from signgd_lab.conversion import get_recipe
    from signgd_lab.probes import ann_activations

    torch.manual_seed(5)
    model = EXTENDED_CASES[case]().eval()
    x = torch.randn(64, 5, 16) * 3 if case == "attention" else (
        torch.randn(64, 2, 8, 8) * 4 if case == "cnn" else torch.randn(64, 6) * 4)
    import signgd_lab as sl
    snn = sl.convert(model, x, dynamics="extended")
    assert torch.allclose(snn.ann(x), model(x), atol=1e-4, rtol=1e-4)
    recipe = get_recipe("extended")
    assert recipe.softmax == "max_subtract"
    acts = ann_activations(snn, x)
    assert any(isinstance(m, MatmulNeuronOp) for m in snn.neurons.values()) == (case == "attention")
    for name, (inputs, _) in acts.items():
        module = snn.neurons[name]
        z = module.prepare(*inputs)  # what the neurons see
        if isinstance(module, MatmulNeuronOp):  # each product a_nk b_km within [-1, 1]
            assert all(t.abs().max() <= 1.0 + 1e-5 for t in z), name
        else:
            assert module.exact(*z).abs().max() <= 1.0 + 1e-4, name


def test_consecutive_maxpools_keep_their_shapes():
    """Regression (found by the architecture fuzzer): a pool fed by a decomposed pool."""
    model = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.MaxPool2d(2, 2)).eval()
    x = torch.randn(2, 3, 6, 6)
    gm = decompose_maxpool(trace(model), Recipe(), x)
    assert same(gm, model, x, atol=0)
    assert len(neurons(gm)) == 4 + 2  # 2 (k - 1) per pool


@pytest.mark.parametrize("dynamics", ["paper", "extended"])
def test_neuron_modules_own_their_scaling_and_the_kernels_apply_it_exactly(dynamics, monkeypatch):
    """No div / mul nodes around the neurons: each module divides its inputs and multiplies its
    output, and the fused kernels (which do it per neuron) give the torch path's numbers."""
    import operator

    import signgd_lab as sl
    from signgd_lab.dynamics import kernels

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 3)).eval()
    x = torch.rand(16, 1, 4, 4)
    snn = sl.convert(model, x, dynamics=dynamics)
    scaled = {n for n, m in snn.neurons.items() if m.out_scale is not None}
    # paper: the ReLU is scaled; extended: the GELU (x / s -> h -> * s) and max-pooling as well
    assert len(scaled) == (1 if dynamics == "paper" else 4), scaled
    for node in snn.graph_module.graph.nodes:
        if node.op == "call_module" and node.target in snn.neurons:
            readers = {u.target for u in node.users}
            assert not readers & {torch.mul, operator.mul}, node
    fused = snn(x, [4, 16])
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert torch.equal(snn(x, [4, 16]), fused)


@pytest.mark.parametrize("dynamics", ["paper", "extended"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_chain_kernel_gives_the_neuron_by_neuron_numbers(dynamics, kernel, stride, padding,
                                                                 monkeypatch):
    """One MaxPoolChain per pool axis, owning its window geometry; paper mode runs it in one
    kernel, equal bit for bit to the neuron-by-neuron run, and probes read each chain neuron's
    state from the stacked kernel state; extended mode's rescaled chain neurons run their own
    population kernels."""
    import signgd_lab as sl
    from signgd_lab.conversion.neuron_ops import MaxPoolChain
    from signgd_lab.conversion.runtime import Runtime
    from signgd_lab.probes import ActivationProbe, TraceProbe

    torch.manual_seed(1)
    model, x = pooled_cnn(kernel, stride, padding, (12, 2, 7, 7))
    snn = sl.convert(model, x, dynamics=dynamics)
    chains = [m for m in snn.graph_module.modules() if isinstance(m, MaxPoolChain)]
    assert [(len(c.chain), c.dim) for c in chains] == [(kernel - 1, -2), (kernel - 1, -1)]
    names = [n for n in snn.neurons if ".chain." in n]
    fused = []  # whether each chain of each run got the chain kernel's stacked state
    original = Runtime._fuse
    monkeypatch.setattr(Runtime, "_fuse", lambda *a: fused.append(original(*a)) or fused[-1])
    values = ActivationProbe(names, [8, 32])
    with_chain = snn(x, [8, 32], probes=[values])
    assert len(fused) == 2  # both axes ran in the chain kernel (paper), or neither (extended)
    assert all((f is None) == (dynamics == "extended") for f in fused)
    traced = ActivationProbe(names, [8, 32])  # a per-step observer: neuron by neuron
    by_neuron = snn(x, [8, 32], probes=[traced, TraceProbe(names[0], 3)])
    assert fused[2] is None  # the traced chain ran neuron by neuron
    assert torch.equal(by_neuron, with_chain)
    assert torch.equal(snn(x, [8, 32], mode="stepwise"), with_chain)
    for key, value in values.values.items():
        assert torch.equal(value, traced.values[key]), key


@pytest.mark.parametrize("dynamics", ["extended", "if"])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (3, 1, 1)])
def test_padded_maxpool_converges_with_replicate_padding(dynamics, kernel, stride, padding):
    """Regression: padding with -200 put the pool's max / ReLU neurons 200 out of range (the
    extended and IF errors stayed at 0.14 and 1.2 at T=256); edge copies keep them in range."""
    import signgd_lab as sl

    torch.manual_seed(0)
    model, x = pooled_cnn(kernel, stride, padding, (16, 2, 9, 9))
    snn = sl.convert(model, x, dynamics=dynamics)
    ann = model(x).detach()
    err = ((snn(x, [16, 256]) - ann).norm(dim=-1) / ann.norm(dim=-1)).mean(-1)
    assert err[1] < 0.02 and err[1] < err[0], err


@pytest.mark.parametrize("rescale", ["out_scale only", "second divisor only", "batch-1 scales"])
def test_chain_kernel_applies_every_rescaling_or_runs_neuron_by_neuron(rescale, monkeypatch):
    """Regression (review): rescalings the chain kernel cannot express (an output scale alone,
    one divisor) were dropped by the fused path, and scales with a leading batch-1 dim crashed
    it; now the fused run equals the torch path whatever set_scaling was given, and a changed
    scaling gets a fresh correction."""
    import signgd_lab as sl
    from signgd_lab.dynamics import kernels

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                          nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(16, 1, 8, 8)
    snn = sl.convert(model, x, dynamics="paper" if rescale != "batch-1 scales" else "extended")
    before = snn(x[:2], [16])
    for name in [n for n in snn.neurons if ".chain." in n]:
        m = snn.neurons[name]
        if rescale == "out_scale only":
            m.set_scaling((), out_scale=torch.tensor(0.5))
        elif rescale == "second divisor only":
            m.set_scaling((None, torch.tensor(2.0)))
        else:
            m.set_scaling((m.in_scale0[None], m.in_scale1[None]), None, m.out_scale[None])
    fused = snn(x[:2], [16, 64])
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert torch.equal(snn(x[:2], [16, 64]), fused)
    assert torch.equal(fused[0], before[0]) == (rescale == "batch-1 scales")


def test_dynamics_swapped_for_if_are_refused_at_run_time():
    import signgd_lab as sl

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(18, 3)).eval()
    x = torch.randn(8, 1, 8, 8)
    snn = sl.convert(model, x)
    snn.dynamics = sl.IFDynamics()
    with pytest.raises(sl.ConversionError, match="IFDynamics cannot run the max neurons"):
        snn(x, [4])


class _FunctionalWeights(nn.Module):
    """Weight layers written as function calls on the module's own parameters."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.cw = nn.Parameter(torch.randn(6, 2, 3, 3, generator=g) * 0.3)  # groups=2: 4 -> 6
        self.cb = nn.Parameter(torch.randn(6, generator=g) * 0.1)
        self.cw1 = nn.Parameter(torch.randn(6, 3, 3, generator=g) * 0.3)
        self.lw = nn.Parameter(torch.randn(5, 6, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 4, 9, 9)
        y = F.conv2d(x, self.cw, self.cb, 2, 1, 2, 2)  # stride 2, padding 1, dilation 2
        y = F.conv1d(y.flatten(2), self.cw1, None, padding="same", groups=2)
        return F.linear(y.mean(-1), self.lw)  # no bias


def test_functional_weight_layers_become_modules_with_the_same_numbers():
    """weight_modules turns F.conv / F.linear calls with constant weights into the equivalent
    modules (stride, padding, dilation, groups and a missing bias kept), computing the same
    numbers; the weights move into the modules."""
    from signgd_lab.conversion.passes import weight_modules

    model = _FunctionalWeights().eval()
    gm = trace(model)
    x = torch.randn(3, 4, 9, 9)
    out = weight_modules(gm)
    kinds = {type(m) for _, m in out.named_children()}
    assert {nn.Conv2d, nn.Conv1d, nn.Linear} <= kinds
    assert not [n for n in out.graph.nodes if n.op == "call_function" and
                getattr(n.target, "__name__", "") in ("conv2d", "conv1d", "linear")]
    assert torch.equal(out(x), gm(x)) and torch.equal(out(x), model(x))
    conv = next(m for _, m in out.named_children() if type(m) is nn.Conv2d)
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == ((2, 2), (1, 1), (2, 2), 2)
    assert next(m for _, m in out.named_children() if type(m) is nn.Linear).bias is None
    assert not any(n.op == "get_attr" for n in out.graph.nodes)  # the weights live in modules
    assert any(n.op == "call_function" for n in gm.graph.nodes)  # the input graph is unchanged


class _SharedWeights(nn.Module):
    """A Linear called as a module and, through its weight, as a function; and a 1-D weight."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.v = nn.Parameter(torch.randn(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 6)
        h = F.linear(self.fc(x), self.fc.weight, self.fc.bias)
        return h + F.linear(h, self.v).unsqueeze(1)  # a dot product per sample


def test_weight_modules_leaves_a_called_layer_and_a_1d_weight_alone():
    """The module whose weight a function call also reads keeps its weight; a 1-D F.linear
    weight (no module computes that) stays a function call."""
    from signgd_lab.conversion.passes import weight_modules

    model = _SharedWeights().eval()
    gm = trace(model)
    out = weight_modules(gm)
    x = torch.randn(4, 6)
    assert torch.equal(out(x), model(x))
    assert sum(type(m) is nn.Linear for m in out.modules()) == 2  # fc and the converted call
    assert [n.op for n in out.graph.nodes if getattr(n.target, "__name__", "") == "linear"] == \
        ["call_function"]  # the dot product
