"""The soundness catalogue: one small seeded model per op pattern, written without reference to
the handler registry. Each entry says what the README claims (``convert`` or ``refuse``) and,
for refusals, a word the ConversionError must contain (the op's name)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Vec(nn.Module):
    """x (B, 6) -> a = A x, b = B x (B, 8) -> f(a, b) (B, 8) -> O (B, 3)."""

    def __init__(self, f: Callable, width: int = 8) -> None:
        super().__init__()
        self.f = f
        self.a, self.b, self.o = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(width, 3)
        self.extra = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.f(self, self.a(x), self.b(x)))


class Seq(nn.Module):
    """x (B, 4, 6) -> a, b (B, 4, 8) -> f -> mean over tokens -> O (B, 3)."""

    def __init__(self, f: Callable) -> None:
        super().__init__()
        self.f = f
        self.a, self.b, self.o = nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 3)
        self.extra = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.f(self, self.a(x), self.b(x)).mean(1))


class Img(nn.Module):
    """x (B, 3, 6, 6) -> a, b = conv3x3 (B, 4, 6, 6) -> f -> global mean -> O (B, 3)."""

    def __init__(self, f: Callable) -> None:
        super().__init__()
        self.f = f
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.o = nn.Linear(4, 3)
        self.extra = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.f(self, self.a(x), self.b(x)).mean((2, 3)))


@dataclass
class Pattern:
    """One catalogue entry."""

    name: str
    make: Callable[[], nn.Module]
    shape: tuple[int, ...]
    expect: str = "convert"  # or "refuse"
    names: str = ""  # for refusals: a word the error must contain
    positive: bool = False  # inputs in [0, 1] instead of [-1, 1]


def vec(f: Callable, width: int = 8, extra: dict | None = None) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        m = Vec(f, width)
        m.extra.update(extra or {})
        return m

    return make


def seq(f: Callable, extra: dict | None = None) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        m = Seq(f)
        m.extra.update(extra or {})
        return m

    return make


def img(f: Callable, extra: dict | None = None) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        m = Img(f)
        m.extra.update(extra or {})
        return m

    return make


def _unassigned_relu_(m, a, b):
    h = a + 0
    h.relu_()
    return h


def _unassigned_inplace_module(m, a, b):
    h = a + 0
    m.extra["act"](h)
    return h


def _attention(m, a, b):
    q, k, v = a, b, a * 0.5
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


def _multi_query_attention(m, a, b):
    """Two query heads share one key/value head: the key and value operands broadcast over
    the head dim of the products (the kernel once read past them: silent wrong answers)."""
    q = a.view(a.shape[0], 4, 2, 4).transpose(1, 2)  # (B, 2 heads, 4 tokens, 4)
    k, v = b[..., :4].unsqueeze(1), b[..., 4:].unsqueeze(1)  # (B, 1, 4, 4)
    out = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v  # (B, 2, 4, 4)
    return out.transpose(1, 2).reshape(a.shape)  # (B, 4, 8)


def _broadcast_left_matmul(m, a, b):
    """The left operand broadcasts over the head dim: (B, 1, 4, 4) @ (B, 2, 4, 4)."""
    heads = b.view(b.shape[0], 4, 2, 4).transpose(1, 2)  # (B, 2, 4, 4)
    return (a[..., :4].unsqueeze(1) @ heads.transpose(-2, -1)).transpose(1, 2).reshape(b.shape)


def _squeeze_excite(m, a, b):
    return a * torch.sigmoid(m.extra["fc"](a.mean((2, 3)))).unsqueeze(-1).unsqueeze(-1)


V, S, I = (6,), (4, 6), (3, 6, 6)
F8 = {"act": nn.ReLU(inplace=True)}

CATALOGUE: list[Pattern] = [
    # elementwise activations
    Pattern("relu", vec(lambda m, a, b: F.relu(a)), V),
    Pattern("relu_method_inplace", vec(lambda m, a, b: a.relu_()), V),
    Pattern("relu_inplace_unassigned", vec(_unassigned_relu_), V),
    Pattern("relu_module_inplace_unassigned", vec(_unassigned_inplace_module, extra=F8), V),
    Pattern("leaky_relu", vec(lambda m, a, b: F.leaky_relu(a, 0.2)), V),
    Pattern("gelu", vec(lambda m, a, b: F.gelu(a)), V),
    Pattern("gelu_tanh", vec(lambda m, a, b: F.gelu(a, approximate="tanh")), V),
    Pattern("silu", vec(lambda m, a, b: F.silu(a)), V),
    Pattern("sigmoid", vec(lambda m, a, b: torch.sigmoid(a)), V),
    Pattern("tanh", vec(lambda m, a, b: torch.tanh(a)), V),
    Pattern("softplus", vec(lambda m, a, b: F.softplus(a)), V),
    Pattern("softplus_beta", vec(lambda m, a, b: F.softplus(a, beta=2.0)), V),
    Pattern("elu", vec(lambda m, a, b: F.elu(a)), V),
    Pattern("mish", vec(lambda m, a, b: F.mish(a)), V),
    Pattern("hardsigmoid", vec(lambda m, a, b: F.hardsigmoid(3 * a)), V),
    Pattern("hardswish", vec(lambda m, a, b: F.hardswish(3 * a)), V),
    Pattern("relu6", vec(lambda m, a, b: F.relu6(4 * a)), V),
    Pattern("relu6_module", vec(lambda m, a, b: m.extra["act"](4 * a), extra={"act": nn.ReLU6()}), V),
    Pattern("hardtanh", vec(lambda m, a, b: F.hardtanh(a)), V),
    Pattern("clamp", vec(lambda m, a, b: torch.clamp(a, -0.3, 0.4)), V),
    Pattern("clamp_min", vec(lambda m, a, b: a.clamp(min=0.1)), V),
    Pattern("clamp_max", vec(lambda m, a, b: torch.clamp(a, max=0.2)), V),
    Pattern("abs", vec(lambda m, a, b: torch.abs(a)), V),
    Pattern("exp", vec(lambda m, a, b: torch.exp(0.5 * a)), V),
    Pattern("pow2", vec(lambda m, a, b: a ** 2), V),
    Pattern("square", vec(lambda m, a, b: torch.square(a)), V),
    Pattern("pow3", vec(lambda m, a, b: a.pow(3)), V),
    Pattern("sqrt", vec(lambda m, a, b: torch.sqrt(torch.sigmoid(a) + 0.1)), V),
    Pattern("rsqrt", vec(lambda m, a, b: torch.rsqrt(torch.sigmoid(a) + 0.5)), V),
    Pattern("prelu", vec(lambda m, a, b: m.extra["act"](a), extra={"act": nn.PReLU(8, 0.3)}), V),
    # two input-dependent operands
    Pattern("product", vec(lambda m, a, b: a * b), V),
    Pattern("gated_gelu_sigmoid", vec(lambda m, a, b: F.gelu(a) * torch.sigmoid(b)), V),
    Pattern("swiglu", vec(lambda m, a, b: F.silu(a) * b), V),
    Pattern("maximum", vec(lambda m, a, b: torch.maximum(a, b)), V),
    Pattern("maximum_of_neurons", vec(lambda m, a, b: torch.maximum(F.relu(a), torch.sigmoid(b))), V),
    Pattern("minimum", vec(lambda m, a, b: torch.minimum(a, b)), V),
    Pattern("divide_by_neuron", vec(lambda m, a, b: a / torch.sigmoid(b)), V),
    Pattern("divide", vec(lambda m, a, b: a / (torch.sigmoid(b) + 0.5)), V),
    Pattern("addcmul", vec(lambda m, a, b: torch.addcmul(a, a, b, value=0.5)), V),
    Pattern("glu", vec(lambda m, a, b: F.glu(torch.cat([a, b], -1), -1)), V),
    Pattern("einsum_elementwise", vec(lambda m, a, b: torch.einsum("bi,bi->bi", a, b)), V),
    Pattern("einsum_outer", vec(lambda m, a, b: torch.einsum("bi,bj->bij", a, b).sum(1)), V),
    Pattern("einsum_static", vec(lambda m, a, b: torch.einsum("bi,ij->bj", F.relu(a), m.extra["w"].weight),
                                 extra={"w": nn.Linear(8, 8)}), V),
    # normalisations and reductions
    Pattern("softmax", vec(lambda m, a, b: torch.softmax(a, -1)), V),
    Pattern("log_softmax", vec(lambda m, a, b: F.log_softmax(a, -1)), V),
    Pattern("log_softmax_module", vec(lambda m, a, b: m.extra["ls"](a), extra={"ls": nn.LogSoftmax(1)}), V),
    Pattern("layer_norm", vec(lambda m, a, b: F.layer_norm(a, (8,))), V),
    Pattern("layer_norm_module", vec(lambda m, a, b: m.extra["ln"](a), extra={"ln": nn.LayerNorm(8)}), V),
    Pattern("normalize", vec(lambda m, a, b: F.normalize(a, dim=-1)), V),
    Pattern("max_dim_values", vec(lambda m, a, b: a - a.max(-1, keepdim=True).values), V),
    Pattern("amax", vec(lambda m, a, b: a - torch.amax(a, -1, keepdim=True)), V),
    Pattern("max_dim_getitem", vec(lambda m, a, b: a - torch.max(a, 1)[0].unsqueeze(1)), V),
    Pattern("min_dim", vec(lambda m, a, b: a - a.min(-1, keepdim=True).values), V),
    Pattern("batch_mean_subtracted", vec(lambda m, a, b: a - a.mean(0)), V, "refuse", "mean"),
    Pattern("mean_all", vec(lambda m, a, b: a - a.mean()), V, "refuse", "mean"),
    Pattern("sum_all", vec(lambda m, a, b: a * 0 + a.sum()), V, "refuse", "sum"),
    Pattern("max_all", vec(lambda m, a, b: a - a.max()), V, "refuse", "max"),
    Pattern("argmax", vec(lambda m, a, b: a + a.max(-1, keepdim=True).indices), V, "refuse", "max"),
    # refused: not a neuron
    Pattern("where_comparison", vec(lambda m, a, b: torch.where(a > 0, a, b)), V, "refuse", "gt"),
    Pattern("comparison", vec(lambda m, a, b: (a > 0).float()), V, "refuse", "gt"),
    Pattern("sort", vec(lambda m, a, b: torch.sort(a, -1).values), V, "refuse", "sort"),
    Pattern("erf", vec(lambda m, a, b: torch.erf(a)), V, "refuse", "erf"),
    Pattern("cumprod", vec(lambda m, a, b: a.cumprod(-1)), V, "refuse", "cumprod"),
    Pattern("pow_fractional", vec(lambda m, a, b: (torch.sigmoid(a) + 0.1) ** 2.5), V, "refuse", "pow"),
    Pattern("floor", vec(lambda m, a, b: torch.floor(a)), V, "refuse", "floor"),
    # sequences
    Pattern("attention_handwritten", seq(_attention), S),
    Pattern("linear_batchnorm1d_3d", seq(lambda m, a, b: F.relu(m.extra["bn"](a)), extra={"bn": nn.BatchNorm1d(4)}), S),
    Pattern("mha", seq(lambda m, a, b: m.extra["mha"](a, b, b)[0],
                       extra={"mha": nn.MultiheadAttention(8, 2, batch_first=True)}), S),
    Pattern("sdpa", seq(lambda m, a, b: F.scaled_dot_product_attention(a, b, b)), S),
    Pattern("token_matmul", seq(lambda m, a, b: torch.bmm(a, b.transpose(1, 2)) @ a * 0.2), S),
    Pattern("multi_query_attention", seq(_multi_query_attention), S),
    Pattern("broadcast_left_matmul", seq(_broadcast_left_matmul), S),
    # images
    Pattern("squeeze_excite", img(_squeeze_excite, extra={"fc": nn.Linear(4, 4)}), I),
    Pattern("conv_bn_relu", img(lambda m, a, b: F.relu(m.extra["bn"](a)), extra={"bn": nn.BatchNorm2d(4)}), I),
    Pattern("prelu_channels", img(lambda m, a, b: m.extra["act"](a), extra={"act": nn.PReLU(4, 0.2)}), I),
    Pattern("group_norm", img(lambda m, a, b: F.relu(m.extra["gn"](a)), extra={"gn": nn.GroupNorm(2, 4)}), I),
    Pattern("instance_norm", img(lambda m, a, b: F.relu(m.extra["n"](a)), extra={"n": nn.InstanceNorm2d(4, affine=True)}), I),
    Pattern("instance_norm_running", img(lambda m, a, b: F.relu(m.extra["n"](a)),
                                         extra={"n": nn.InstanceNorm2d(4, track_running_stats=True)}), I),
    Pattern("upsample_nearest", img(lambda m, a, b: F.relu(m.extra["up"](a)),
                                    extra={"up": nn.Upsample(scale_factor=2, mode="nearest")}), I),
    Pattern("interpolate_bilinear", img(lambda m, a, b: F.relu(F.interpolate(a, scale_factor=2, mode="bilinear"))), I),
    Pattern("conv_transpose", img(lambda m, a, b: F.relu(m.extra["ct"](a)), extra={"ct": nn.ConvTranspose2d(4, 4, 2, 2)}), I),
    Pattern("maxpool", img(lambda m, a, b: F.max_pool2d(a, 2)), I),
    Pattern("maxpool_ceil", img(lambda m, a, b: m.extra["p"](a), extra={"p": nn.MaxPool2d(3, 2, ceil_mode=True)}), I),
    Pattern("avgpool_relu", img(lambda m, a, b: F.relu(F.avg_pool2d(a, 2))), I),
    Pattern("hardswish_conv", img(lambda m, a, b: F.hardswish(3 * a)), I),
]


def timm_batchnorm_act() -> Pattern | None:
    """A conv followed by timm's BatchNormAct2d with SiLU (efficientnet's block), if timm exists."""
    try:
        from timm.layers.norm_act import BatchNormAct2d
    except ImportError:
        return None
    bn = BatchNormAct2d(4, act_layer=nn.SiLU)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 1.5)
    return Pattern("timm_batchnorm_act_silu", img(lambda m, a, b: m.extra["bn"](a), extra={"bn": bn}), I)
