"""Handlers that decompose composite ops (docs/theory.md, section 4, steps 3-5) into glue + neurons.

* max-pooling -> a chain of pairwise max neurons over the row offsets of the padded input, then
  one over the column offsets of that result (each a :class:`MaxPoolChain` module)
* LayerNorm   -> mean, u = x - mean, square neurons, var = mean, u / sqrt(var + eps) neurons, affine
* attention   -> scale * (q @ k^T) product neurons (+ mask) -> softmax neurons -> (p @ v) neurons
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph_utils import Emitter, attr_tensor, module_of, node_shape
from ..dynamics.targets import get_target
from .handlers import (OpHandler, _arg, arg_of, matmul_neurons, neuron, neuron_name,
                       register_handler, softmax_neurons, source_of)
from .neuron_ops import MaxPoolChain, NeuronOp
from .recipes import Recipe


def pair(v: object) -> tuple[int, int]:
    """A pooling size given as one int or a pair, as a pair."""
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def pool_args(gm: fx.GraphModule, node: fx.Node) -> dict:
    """A max-pool node's arguments under torch's names (module attributes or call arguments)."""
    mod = module_of(gm, node)
    if mod is not None:
        return dict(kernel_size=mod.kernel_size, stride=mod.stride, padding=mod.padding,
                    dilation=mod.dilation, ceil_mode=mod.ceil_mode,
                    return_indices=mod.return_indices)
    kernel = arg_of(gm, node, "kernel_size")
    return dict(kernel_size=kernel, stride=arg_of(gm, node, "stride") or kernel,
                padding=arg_of(gm, node, "padding", 0), dilation=arg_of(gm, node, "dilation", 1),
                ceil_mode=bool(arg_of(gm, node, "ceil_mode", False)),
                return_indices=bool(arg_of(gm, node, "return_indices", False)))


def _maxpool_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    p = pool_args(gm, node)
    if pair(p["dilation"]) != (1, 1):
        return "max-pooling with dilation != 1 is not supported; use dilation=1"
    if p["ceil_mode"] or p["return_indices"]:
        return "max-pooling with ceil_mode or return_indices is not supported"
    return None


def _max_over_offsets(emit: Emitter, node: fx.Node, recipe: Recipe, x: fx.Proxy, axis: str,
                      kernel: int, stride: int, size: int) -> fx.Proxy:
    """max over the ``kernel`` offsets of the rows (``axis="r"``, dim -2) or columns (``"c"``,
    dim -1) of the strided slices w_i = x[i : i + stride * (size - 1) + 1 : stride]: one
    :class:`MaxPoolChain` of pairwise max neurons m_1 = max(w_0, w_1), m_i = max(m_{i-1}, w_i)
    (recipe ``max``), or m_i = m_{i-1} + relu(w_i - m_{i-1}) with ReLU neurons (recipe
    ``relu``)."""
    if recipe.maxpool_neuron == "max" and kernel > 1:
        source = source_of(emit.gm, node)
        neurons = [NeuronOp(get_target("max"), source, "max-pool") for _ in range(kernel - 1)]
        chain = MaxPoolChain(neurons, -2 if axis == "r" else -1, kernel, stride, size)
        return emit.module(neuron_name(node, "max", f"_{axis}"), chain, x)
    out = None
    for i in range(kernel):  # max(a, b) = a + relu(b - a); one window when kernel == 1
        along = slice(i, i + stride * (size - 1) + 1, stride)
        window = x[..., along, :] if axis == "r" else x[..., along]
        out = window if out is None else out + neuron(emit, node, "relu", window - out,
                                                      role="max-pool", suffix=f"_{axis}{i}")
    return out


def _maxpool(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    """A k x k max-pool, separably: first the max over the k row offsets on full-width rows,
    then over the k column offsets of that result: 2 (k - 1) neuron populations instead of the
    k^2 - 1 of a chain over all windows, with the same accuracy (docs/theory.md), in the
    reference's order."""
    p = pool_args(emit.gm, node)
    (kh, kw), (sh, sw), (ph, pw) = pair(p["kernel_size"]), pair(p["stride"]), pair(p["padding"])
    h, w = node_shape(node.args[0])[-2:]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    x = emit.proxy(node.args[0])
    if ph or pw:
        if recipe.maxpool_padding == "replicate":
            x = F.pad(x, (pw, pw, ph, ph), mode="replicate")  # (B, C, H+2p, W+2p)
        else:
            x = F.pad(x, (pw, pw, ph, ph), value=recipe.maxpool_padding)
    rows = _max_over_offsets(emit, node, recipe, x, "r", kh, sh, ho)  # (B, C, Ho, W+2p)
    return _max_over_offsets(emit, node, recipe, rows, "c", kw, sw, wo)  # (B, C, Ho, Wo)


def _ln_params(gm: fx.GraphModule, node: fx.Node) -> tuple[tuple[int, ...], object, object, float, bool]:
    """(reduced dims, weight, bias, eps, channels_first) of a LayerNorm node."""
    from .lazy_imports import loaded_object

    mod = module_of(gm, node)
    if mod is not None:
        layer_norm_2d = loaded_object("timm.layers.LayerNorm2d")  # None: timm not imported
        channels_first = layer_norm_2d is not None and isinstance(mod, layer_norm_2d)
        dims = (1,) if channels_first else tuple(range(-len(mod.normalized_shape), 0))
        return dims, mod.weight, mod.bias, mod.eps, channels_first
    shape = _arg(node, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return (tuple(range(-len(shape), 0)), _arg(node, 2, "weight"), _arg(node, 3, "bias"),
            float(_arg(node, 4, "eps", 1e-5)), False)


def _layernorm(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    dims, weight, bias, eps, channels_first = _ln_params(emit.gm, node)
    x = emit.proxy(node.args[0])
    mean = x.mean(dims, keepdim=True)
    u = x - mean
    q = neuron(emit, node, "square", u, role="layernorm-square")
    var = q.mean(dims, keepdim=True)
    n = neuron(emit, node, "rsqrt_div", u, var + eps, role="layernorm-normalise")

    def as_operand(t: object, name: str) -> object:
        if isinstance(t, fx.Node):
            p = emit.proxy(t)
            return p.reshape(-1, 1, 1) if channels_first else p
        if isinstance(t, torch.Tensor):
            return emit.constant(f"{node.name}_{name}", t.reshape(-1, 1, 1) if channels_first else t)
        return None

    w, b = as_operand(weight, "weight"), as_operand(bias, "bias")
    if w is not None:
        n = n * w
    if b is not None:
        n = n + b
    return n


def _scores(emit: Emitter, node: fx.Node, q: fx.Proxy, k: fx.Proxy,
            scale: float | fx.Proxy) -> fx.Proxy:
    """scale * (q @ k^T), (..., N, D) x (..., M, D) -> (..., N, M): the product neurons see the
    unscaled q and k and the scale multiplies their decoded sum (the reference's order; in the
    extended recipe the normalisation makes both orders give the same numbers)."""
    return scale * matmul_neurons(emit, node, q, k.transpose(-2, -1), suffix="_qk",
                                  role="attention-scores")


def _sdpa_core(emit: Emitter, node: fx.Node, q: fx.Proxy, k: fx.Proxy, v: fx.Proxy,
               scale: float | fx.Proxy, keys: int, recipe: Recipe, mask: object = None) -> fx.Proxy:
    """softmax(scale * q @ k^T + mask) @ v with neurons. q (..., N, D), k, v (..., M, D);
    ``keys`` is M."""
    scores = _scores(emit, node, q, k, scale)  # (..., N, M)
    if mask is not None:
        scores = scores + mask
    probs = softmax_neurons(emit, node, scores, -1, recipe, keys)
    return matmul_neurons(emit, node, probs, v, suffix="_pv", role="attention-values")


def _timm_attention_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    mod = module_of(gm, node)
    if len(node.args) > 1 or any(v is not None and v is not False for v in node.kwargs.values()):
        return "timm Attention called with attn_mask or is_causal is not supported"
    if getattr(mod, "gate", None) is not None:
        return "gated timm Attention (sigmoid gate) is not supported"
    return None


def _timm_attention(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    mod = module_of(emit.gm, node)
    path = node.target
    x = emit.proxy(node.args[0])  # (B, N, C)
    b, n = x.size(0), x.size(1)
    qkv = emit.call(f"{path}.qkv", x).reshape(b, n, 3, mod.num_heads, mod.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)
    q, k = emit.call(f"{path}.q_norm", q), emit.call(f"{path}.k_norm", k)
    tokens = node_shape(node.args[0])[1]
    out = _sdpa_core(emit, node, q, k, v, mod.scale, tokens, recipe)  # (B, H, N, D)
    out = out.transpose(1, 2).reshape(b, n, mod.num_heads * mod.head_dim)  # (B, N, H*D)
    out = emit.call(f"{path}.norm", out)
    return emit.call(f"{path}.proj_drop", emit.call(f"{path}.proj", out))


def _sdpa_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if _arg(node, 5, "is_causal", False):
        return "scaled_dot_product_attention with is_causal=True: pass an explicit additive mask"
    if _arg(node, 4, "dropout_p", 0.0):
        return "scaled_dot_product_attention with dropout_p > 0: use dropout_p=0 for inference"
    if node.kwargs.get("enable_gqa", False):
        return "scaled_dot_product_attention with enable_gqa=True is not supported"
    mask = _arg(node, 3, "attn_mask")
    if isinstance(mask, fx.Node):  # a buffer or a computed mask: its dtype from the graph
        meta = mask.meta.get("tensor_meta")
        mask = attr_tensor(gm, mask) if mask.op == "get_attr" else \
            torch.empty(0, dtype=meta.dtype) if meta is not None else None
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        return ("boolean attention masks are not supported: pass an additive float mask "
                "(0 where attended, e.g. -30 where masked)")
    return None


def _sdpa(emit: Emitter, node: fx.Node, recipe: Recipe) -> fx.Proxy:
    q, k, v = (emit.proxy(a) for a in node.args[:3])
    scale = _arg(node, 6, "scale")
    if scale is None:
        scale = 1.0 / math.sqrt(node_shape(node.args[0])[-1])
    mask = _arg(node, 3, "attn_mask")
    mask = emit.proxy(mask) if isinstance(mask, fx.Node) else mask
    return _sdpa_core(emit, node, q, k, v, scale, node_shape(node.args[1])[-2], recipe, mask)


def _mha_check(gm: fx.GraphModule, node: fx.Node) -> str | None:
    for i, name in ((3, "key_padding_mask"), (5, "attn_mask")):
        if _arg(node, i, name) is not None:
            return f"nn.MultiheadAttention with {name} is not supported"
    if _arg(node, 7, "is_causal", False):
        return "nn.MultiheadAttention with is_causal=True is not supported"
    for user in node.users:
        if not (user.op == "call_function" and user.target.__name__ == "getitem"):
            return "nn.MultiheadAttention output must be unpacked (out, weights = attn(...))"
    return None


def _mha(emit: Emitter, node: fx.Node, recipe: Recipe) -> None:
    mod: nn.MultiheadAttention = module_of(emit.gm, node)
    query, key, value = (emit.proxy(a) for a in node.args[:3])
    if not mod.batch_first:  # (L, B, E) -> (B, L, E)
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    e, h = mod.embed_dim, mod.num_heads
    d = e // h
    if mod._qkv_same_embed_dim:
        w = mod.in_proj_weight
        wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
    else:
        wq, wk, wv = mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight
    bq = bk = bv = None
    if mod.in_proj_bias is not None:
        bq, bk, bv = mod.in_proj_bias[:e], mod.in_proj_bias[e:2 * e], mod.in_proj_bias[2 * e:]

    def project(t: fx.Proxy, wt: torch.Tensor, bt: torch.Tensor | None, tag: str) -> fx.Proxy:
        wp = emit.constant(f"{node.name}_w{tag}", wt)
        bp = emit.constant(f"{node.name}_b{tag}", bt) if bt is not None else None
        y = F.linear(t, wp, bp)  # (B, L, E)
        return y.reshape(y.size(0), y.size(1), h, d).transpose(1, 2)  # (B, H, L, D)

    q, k, v = project(query, wq, bq, "q"), project(key, wk, bk, "k"), project(value, wv, bv, "v")
    scores = _scores(emit, node, q, k, 1.0 / math.sqrt(d))  # (B, H, L, S)
    keys = node_shape(node.args[1])[0 if not mod.batch_first else 1]
    probs = softmax_neurons(emit, node, scores, -1, recipe, keys)  # (B, H, L, S)
    out = matmul_neurons(emit, node, probs, v, suffix="_pv", role="attention-values")
    out = out.transpose(1, 2).reshape(out.size(0), out.size(2), e)  # (B, L, E)
    proj = mod.out_proj  # a Linear subclass: applied as the plain linear map it is
    out = F.linear(out, emit.constant(f"{node.name}_wo", proj.weight),
                   emit.constant(f"{node.name}_bo", proj.bias) if proj.bias is not None else None)
    if not mod.batch_first:
        out = out.transpose(0, 1)
    need_weights = _arg(node, 4, "need_weights", True)
    average = _arg(node, 6, "average_attn_weights", True)
    weights = (probs.mean(1) if average else probs) if need_weights else None
    for user in list(node.users):
        result = out if user.args[1] == 0 else weights
        if result is None:
            user.replace_all_uses_with(None)
        else:
            user.replace_all_uses_with(result.node)
        emit.gm.graph.erase_node(user)
    emit.gm.graph.erase_node(node)
    return None


def _timm_types(*names: str) -> tuple[str, ...]:
    """Dotted names of public ``timm.layers`` classes for :attr:`OpHandler.modules`: they are
    looked up when nodes are matched, and only once timm is imported (conversion never imports
    timm; see :mod:`.lazy_imports`)."""
    return tuple(f"timm.layers.{name}" for name in names)


register_handler(OpHandler(
    "attention_timm", "attention", _timm_attention, "q@k^T, softmax, @v with neurons",
    modules=_timm_types("Attention"), check=_timm_attention_check))
register_handler(OpHandler(
    "multihead_attention", "attention", _mha, "q@k^T, softmax, @v with neurons",
    modules=(nn.MultiheadAttention,), check=_mha_check))
register_handler(OpHandler(
    "scaled_dot_product_attention", "attention", _sdpa, "q@k^T, softmax, @v with neurons",
    functions=(F.scaled_dot_product_attention,), check=_sdpa_check))
register_handler(OpHandler(
    "layer_norm", "layernorm", _layernorm, "mean, square neurons, x/sqrt(var) neurons, affine",
    modules=(nn.LayerNorm, *_timm_types("LayerNorm", "LayerNorm2d")), functions=(F.layer_norm,)))
register_handler(OpHandler(
    "max_pool2d", "maxpool", _maxpool, "max neurons over row offsets, then column offsets",
    modules=(nn.MaxPool2d,), functions=(F.max_pool2d, torch.max_pool2d), check=_maxpool_check))
