"""Compiled CPU kernels against the plain torch path: bit for bit for targets made of exact
IEEE operations, spike for spike up to rare last-bit ties for the exp-based ones."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import signgd_lab as sl
from signgd_lab.dynamics import NeuronState, SignGDNeuron, get_target, kernels
from signgd_lab.dynamics.neurons import Drive, ProductSumNeurons
from signgd_lab.dynamics.targets import unregister_target

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
    state = NeuronState(tuple(x.clone() for x in x0), torch.zeros(shape, dtype=x0[0].dtype))
    out, start = [], 0
    for size in blocks:
        sub = tuple(Drive(d.current[start:start + size], d.offset) for d in drives)
        out.append(SignGDNeuron(target).run(state, sub, ETAS[start:start + size]))
        start += size
    return torch.cat(out), state


EXACT_CASES = [
    ("relu", [(4, 3, 5)], {}), ("leaky_relu", [(4, 7)], {"slope": 0.2}), ("abs", [(4, 7)], {}),
    ("square", [(4, 7)], {}), ("max", [(4, 6), (4, 6)], {}), ("mul", [(4, 6), (4, 6)], {}),
    ("div", [(4, 6), (4, 6)], {}), ("rsqrt_div", [(4, 6), (4, 6)], {}),
    ("div", [(4, 3, 6), (4, 3, 1)], {}),        # one divisor per row (softmax): row kernel
    ("rsqrt_div", [(4, 3, 6), (4, 3, 1)], {}),  # one variance per row (LayerNorm): row kernel
]
TRANSCENDENTAL_CASES = [(name, [(8, 5, 7)], {}) for name in kernels.TRANSCENDENTAL_TARGETS]


def case_id(case) -> str:
    return f"{case[0]}-{'row' if case[1][-1][-1] == 1 else len(case[1][-1])}d"


@pytest.mark.parametrize("name,shapes,params", EXACT_CASES, ids=[case_id(c) for c in EXACT_CASES])
def test_kernels_match_torch_bit_for_bit(name, shapes, params, monkeypatch):
    target, drives, x0 = population(name, shapes, seed=len(name), **params)
    assert target.kernel in kernels.EXACT_TARGETS
    fused, s1 = run(target, drives, x0, True, monkeypatch)
    plain, s2 = run(target, drives, x0, False, monkeypatch)
    assert torch.equal(fused, plain)
    assert torch.equal(s1.v, s2.v) and all(torch.equal(a, b) for a, b in zip(s1.x_hat, s2.x_hat))
    # the block length does not change the arithmetic either
    blocked, _ = run(target, drives, x0, True, monkeypatch, blocks=(1, 7, 40))
    assert torch.equal(blocked, plain)


@pytest.mark.parametrize("per_row", [True, False], ids=["row", "elementwise"])
def test_rsqrt_div_kernel_matches_torch_at_ties_over_a_long_run(per_row, monkeypatch):
    """LayerNorm's x1 / sqrt(x2) rule over 256 steps, where its estimates settle and v lands on
    sqrt(x2) v == x1 exactly: the torch path's sqrt must round once, as the kernel's does
    (torch's CPU sqrt is 1 ulp off for about 20% of float32 inputs, which fired the kernel and
    not the torch path at such ties, after step 150)."""
    steps = 256
    etas = sl.SignGDDynamics().etas(steps)
    shapes = [(16, 4, 32), (16, 4, 1 if per_row else 32)]
    spikes = []
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        drives = [Drive(torch.rand(steps, *s, generator=g) * 2 - 0.5,
                        torch.rand(1, *s[1:], generator=g)) for s in shapes]
        x0 = [torch.randn(*shapes[0], generator=g), torch.rand(*shapes[1], generator=g) + 0.5]
        for enabled in (True, False):
            monkeypatch.setattr(kernels, "ENABLED", enabled)
            state = NeuronState(tuple(x.clone() for x in x0), torch.zeros(shapes[0]))
            spikes.append(SignGDNeuron(get_target("rsqrt_div")).run(state, drives, etas))
    assert all(torch.equal(a, b) for a, b in zip(spikes[::2], spikes[1::2]))


def test_target_sqrt_rounds_once():
    """The targets' sqrt against numpy's (IEEE) on 10^6 float32 inputs: equal everywhere."""
    from signgd_lab.dynamics.targets import _sqrt

    x = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0)) * 8
    assert torch.equal(_sqrt(x), torch.from_numpy(np.sqrt(x.numpy())))


@pytest.mark.parametrize("name,shapes,params", TRANSCENDENTAL_CASES,
                         ids=[case_id(c) for c in TRANSCENDENTAL_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_based_kernels_agree_with_torch(name, shapes, params, dtype, monkeypatch):
    """exp, the GELUs, silu, ...: g may differ from torch's in the last bits, which changes a
    spike only at a tie that close (and that neuron's later spikes with it). Input estimates
    agree exactly, spikes almost everywhere (measured on 2M float32 neuron-steps: 0.1% for
    gelu_erf, whose torch erf is its own approximation, 0.002% or less for the others)."""
    target, drives, x0 = population(name, shapes, seed=len(name), **params)
    drives = [Drive(d.current.to(dtype), d.offset.to(dtype)) for d in drives]
    x0 = [x.to(dtype) for x in x0]
    fused, s1 = run(target, drives, x0, True, monkeypatch)
    plain, s2 = run(target, drives, x0, False, monkeypatch)
    assert fused.dtype == dtype and fused.shape == plain.shape == (48, 8, 5, 7)
    assert (fused != plain).double().mean() <= 1e-2
    assert all(torch.equal(a, b) for a, b in zip(s1.x_hat, s2.x_hat))  # exact arithmetic
    blocked, _ = run(target, drives, x0, True, monkeypatch, blocks=(1, 7, 40))
    assert torch.equal(blocked, fused)  # the kernel is block-length independent


def test_a_population_prepares_its_kernel_once_and_not_for_changed_inputs(monkeypatch):
    """The kernel a population prepares on its first block serves the next blocks; it is
    prepared anew when an offset or a scale changes (in place or replaced), and reads a replaced
    state tensor, a state tensor on new storage and a broadcast scale edited through ``.data``:
    spikes and final state equal the torch path's under the same changes."""
    target, drives, x0 = population("leaky_relu", [(4, 7)], seed=5, slope=0.2)
    shift, divisor, out_scale = (torch.rand(1, 7) + 0.5 for _ in range(3))
    half = torch.full((1, 1), 1.5)

    def blocks(enabled: bool) -> tuple[torch.Tensor, list, NeuronState]:
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        state = NeuronState((x0[0].clone(),), torch.zeros(4, 7))
        offset, prepared, out = drives[0].offset.clone(), [], []
        for start in range(0, 48, 8):
            if start == 16:
                offset.mul_(0.5)  # in place: the same tensor, a new version
            if start == 24:
                divisor.add_(0.25)
            if start == 32:
                state.v = state.v.clone()  # replaced state
            if start == 40:
                state.v.set_(state.v.clone())  # the same tensor on new storage
                half.data.mul_(0.5)  # an edit torch's version counter does not see
            current = drives[0].current[start:start + 8]
            drive = Drive(current, offset, divisor, shift)
            if start >= 32:  # a broadcast (1, 1) divisor: its per-neuron array is a copy
                drive = Drive(current, offset, half, shift)
            out.append(SignGDNeuron(target).run(state, (drive,), ETAS[start:start + 8],
                                                out_scale=out_scale))
            prepared.append(state.kernel)
        return torch.cat(out), prepared, state

    divisor0, half0 = divisor.clone(), half.clone()
    fused, prepared, s1 = blocks(True)
    divisor.copy_(divisor0)
    half.copy_(half0)
    plain, _, s2 = blocks(False)
    divisor.copy_(divisor0)
    assert torch.equal(fused, plain)
    assert torch.equal(s1.v, s2.v) and torch.equal(s1.x_hat[0], s2.x_hat[0])  # the new state
    assert isinstance(prepared[0], kernels.PopulationKernel)
    assert prepared[0] is prepared[1]  # nothing changed: reused
    assert prepared[1] is not prepared[2] and prepared[2] is not prepared[3]  # offset, divisor
    assert prepared[3] is not prepared[4]  # another tensor in the divisor's role
    assert prepared[4] is prepared[5]  # new storage, a .data edit: arrays read again, kept


@pytest.mark.parametrize("name,shapes", [("gelu_erf", [(8, 5, 7)]), ("relu", [(8, 5, 7)]),
                                         ("rsqrt_div", [(8, 5, 7), (8, 5, 1)])])
def test_counted_and_output_scaled_spikes_match_torch(name, shapes, monkeypatch):
    """Counting and the output scale run in the kernel's second pass over a block's spikes:
    the counts equal the torch path's, and so do the scaled spikes, down to the sign of a zero
    under a negative scale (a zero scale keeps its neurons' spikes out of the output only)."""
    target, drives, x0 = population(name, shapes, seed=11)
    out_scale = torch.linspace(-1.0, 2.0, 35).reshape(1, 5, 7)
    out_scale[0, 0, :3] = 0.0

    def counted(enabled: bool) -> tuple[torch.Tensor, float, NeuronState]:
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        state = NeuronState(tuple(x.clone() for x in x0), torch.zeros(8, 5, 7), fired=0.0)
        out = [SignGDNeuron(target).run(state, tuple(Drive(d.current[a:b], d.offset)
                                                     for d in drives), ETAS[a:b],
                                        out_scale=out_scale) for a, b in ((0, 9), (9, 48))]
        return torch.cat(out), float(state.fired), state

    fused, fired, s1 = counted(True)
    plain, fired_plain, s2 = counted(False)
    assert isinstance(s1.kernel, kernels.PopulationKernel)  # the kernel ran
    if name != "gelu_erf":  # exact targets: bit for bit, signed zeros included
        assert fired == fired_plain > 0
        assert torch.equal(fused, plain) and torch.equal(fused.signbit(), plain.signbit())
    else:  # g within ulps of torch's: a spike differs only at a tie that close
        assert abs(fired - fired_plain) <= 0.01 * fired_plain and fired_plain > 0
        assert (fused != plain).double().mean() <= 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_count_nonzero_counts_as_torch_does(dtype):
    """The probes' nonzero count: NaN and inf count, -0.0 does not; strided tensors and other
    dtypes take torch's count."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(300, 7, generator=g) > 0.6).to(dtype) * 0.25
    x[0, :4] = torch.tensor([float("nan"), -0.0, float("inf"), -1e-30], dtype=dtype)
    for t in (x, x.t(), x[:, 2:5], x.to(torch.int32), x[:0], x.clone().requires_grad_()):
        assert kernels.count_nonzero(t) == int(torch.count_nonzero(t))


def test_rescaled_target_runs_in_the_kernel(monkeypatch):
    """h(z) = g(s z) / s (the extended recipe's GELU) with a per-neuron scale."""
    target, drives, x0 = population("gelu_erf", [(6, 3, 4)], seed=3)
    scaled = target.rescaled(torch.linspace(0.5, 4.0, 12).reshape(1, 3, 4))
    assert scaled.kernel == "gelu_erf" and scaled.scale is not None
    fused, _ = run(scaled, drives, x0, True, monkeypatch)
    plain, _ = run(scaled, drives, x0, False, monkeypatch)
    assert (fused != plain).double().mean() <= 1e-2
    unscaled, _ = run(target, drives, x0, True, monkeypatch)
    assert not torch.equal(unscaled, fused)  # the scale is applied


def test_user_targets_never_use_a_kernel(monkeypatch):
    """A user's function must run as written, even under a built-in's name."""
    from signgd_lab.dynamics import targets

    mine = sl.register_target("kernel_probe_target", lambda x: torch.relu(x) * 2.0)
    try:
        assert mine.kernel is None
        v = torch.zeros(2, 3)
        assert kernels.population_layout(mine.kernel, (v,), v, (torch.zeros(1, 3),)) is None
        assert get_target("relu").kernel == "relu"
        assert get_target("leaky_relu", slope=0.3).kernel == "leaky_relu"
    finally:
        unregister_target("kernel_probe_target")
    # overriding a built-in: the kernel must not compute the old relu (registry restored after)
    builtin_relu, drives, x0 = population("relu", [(4, 6)], seed=5)
    monkeypatch.setitem(targets._FACTORIES, "relu", targets._FACTORIES["relu"])
    sl.register_target("relu", lambda x: torch.relu(x) * 2.0, overwrite=True)
    doubled = get_target("relu")
    assert doubled.kernel is None
    fused, _ = run(doubled, drives, x0, True, monkeypatch)
    plain, _ = run(doubled, drives, x0, False, monkeypatch)
    builtin, _ = run(builtin_relu, drives, x0, True, monkeypatch)
    assert torch.equal(fused, plain) and not torch.equal(fused, builtin)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_exp_is_within_two_ulp(dtype):
    """signgd_lab.dynamics.vecmath.vexp against a long-double reference, edge values included."""
    from numba import njit

    from signgd_lab.dynamics.vecmath import vexp

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = vexp(x[i])

    info = np.finfo(dtype)
    top = float(np.log(info.max))
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-top * 1.2, top, 200_000), rng.uniform(-3, 3, 200_000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, top * 1.01, -top * 1.2, 1e-30]]).astype(dtype)
    out = np.empty_like(x)
    apply(x, out)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.longdouble))
        rounded = ref.astype(dtype)
    finite = np.isfinite(rounded) & (rounded != 0)
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.longdouble)
    assert (np.abs(out[finite] - ref[finite]) / ulp).max() <= 2.0
    special = ~finite
    assert np.array_equal(out[special], rounded[special], equal_nan=True)


def test_vectorised_erf_is_within_one_ulp():
    """signgd_lab.dynamics.vecmath.verf (float32) against the correctly rounded erf of each
    input (the C library's float64 erf, rounded once), across both pieces, their seams at 1 and
    4, tiny and subnormal inputs and the specials; and it vectorises (the point of it)."""
    import math

    from numba import njit

    from signgd_lab.dynamics.vecmath import verf

    @njit(error_model="numpy")  # as the kernels compile
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = verf(x[i])

    rng = np.random.default_rng(0)
    seams = np.float32([1.0, -1.0, 4.0, -4.0])
    seams = np.concatenate([seams, np.nextafter(seams, np.float32(np.inf)),
                            np.nextafter(seams, np.float32(-np.inf))])
    x = np.concatenate([rng.uniform(-5, 5, 300_000), rng.uniform(-1, 1, 100_000),
                        rng.standard_normal(50_000) * 1e-4, seams,
                        [0.0, -0.0, 1e-30, -1e-38, 1e-45, 3.9, 3.92, np.inf, -np.inf, np.nan]]
                       ).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    exact = np.array([math.erf(float(v)) for v in x]).astype(np.float32)
    finite = np.isfinite(x) & (exact != 0)
    ulp = np.spacing(np.abs(exact[finite])).astype(np.float64)
    off = np.abs(out[finite].astype(np.float64) - exact[finite]) / ulp
    assert off.max() <= 1.0 and (off > 0).mean() < 1e-4
    special = ~finite
    assert np.array_equal(out[special], exact[special], equal_nan=True)
    assert np.array_equal(np.signbit(out[x == 0]), np.signbit(x[x == 0]))  # erf(-0) = -0
    assert re.search(r"<\d+ x double>", next(iter(apply.inspect_llvm().values())))


def products_both_ways(a0, b0, drives, membranes, monkeypatch) -> torch.Tensor:
    """Product neurons from estimates a0, b0 run with the kernel and with torch ops: asserts
    the counts and the membranes are identical and returns the counts."""
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        state = NeuronState((a0.clone(), b0.clone()), torch.zeros(membranes))
        results.append((ProductSumNeurons(get_target("mul")).run(state, drives, ETAS), state.v))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    return results[0][0]


@pytest.mark.parametrize("heads_a,heads_b,tile_rows", [
    (3, 3, None), (3, 1, None), (1, 3, None), (3, 3, 2), (3, 1, 1)],
    ids=["same-heads", "b-broadcast", "a-broadcast", "tiles-of-2-rows", "tiles-of-1-row"])
def test_product_kernel_matches_torch(heads_a, heads_b, tile_rows, monkeypatch):
    """Including operands that broadcast over a leading dim (one key head shared by three
    query heads, and the mirror case): the kernel once read past such an operand. The kernel
    takes N = 5 rows a tile at a time; small tiles leave a remainder."""
    if tile_rows is not None:
        monkeypatch.setattr(kernels, "_PRODUCT_TILE", tile_rows * 4 * 6)  # K * M per row
    g = torch.Generator().manual_seed(0)
    a0, b0 = torch.rand(2, heads_a, 5, 4, generator=g), torch.rand(2, heads_b, 4, 6, generator=g)
    drives = (Drive(torch.rand(48, 2, heads_a, 5, 4, generator=g),
                    torch.rand(1, heads_a, 5, 4, generator=g)),
              Drive(torch.rand(48, 2, heads_b, 4, 6, generator=g),
                    torch.rand(1, heads_b, 4, 6, generator=g)))
    counts = products_both_ways(a0, b0, drives, (2, 3, 5, 4, 6), monkeypatch)
    assert counts.shape == (48, 2, 3, 5, 6)
    assert counts.max() <= 4  # counts over K = 4 products


def test_product_kernel_broadcasts_an_operand_with_fewer_leading_dims(monkeypatch):
    """a (4, N, K) against b (3, 4, K, M): matmul aligns the leading dims from the right; the
    kernel once lined a's step dim up against b's first leading dim and raised."""
    g = torch.Generator().manual_seed(1)
    a0, b0 = torch.rand(4, 9, 6, generator=g), torch.rand(3, 4, 6, 5, generator=g)
    drives = (Drive(torch.rand(48, 4, 9, 6, generator=g), torch.rand(1, 9, 6, generator=g)),
              Drive(torch.rand(48, 3, 4, 6, 5, generator=g), torch.rand(1, 4, 6, 5, generator=g)))
    counts = products_both_ways(a0, b0, drives, (3, 4, 9, 6, 5), monkeypatch)
    assert counts.shape == (48, 3, 4, 9, 5)


@pytest.mark.parametrize("target_name,shapes", [("relu", [(4, 6)]), ("mul", [(4, 6), (4, 6)])])
def test_kernels_broadcast_a_current_smaller_than_the_population(target_name, shapes,
                                                                 monkeypatch):
    """A current of one value per sample (T, B, 1) drives all S neurons of the sample: the
    kernels spell the broadcast out instead of reading S values from it."""
    target, drives, x0 = population(target_name, shapes, seed=5)
    drives = [Drive(d.current[..., :1], d.offset) for d in drives]
    fused, fused_state = run(target, drives, x0, True, monkeypatch, blocks=(20, 28))
    plain, plain_state = run(target, drives, x0, False, monkeypatch, blocks=(20, 28))
    assert fused.shape == (48, 4, 6)
    assert torch.equal(fused, plain) and torch.equal(fused_state.v, plain_state.v)
    assert all(torch.equal(a, b) for a, b in zip(fused_state.x_hat, plain_state.x_hat))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codec_kernels_match_torch(dtype, monkeypatch):
    """The float encoder and the signGD decoder: the same numbers with and without the
    kernels, over blocks of uneven length, for a permuted (non-contiguous) input."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 4, 5, dtype=dtype, generator=g).permute(1, 0, 2)  # (4, 3, 5), strided
    bias = torch.randn(1, 10, dtype=dtype, generator=g).expand(4, 10)
    offset = torch.rand(1, 10, dtype=dtype, generator=g)
    currents = torch.rand(48, 4, 10, dtype=dtype, generator=g)
    etas = ETAS.to(dtype)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        encoder, decoder = sl.SignGDDynamics().codec(x, bias, offset)
        emitted = torch.cat([encoder.emit(etas[:7]), encoder.emit(etas[7:])])
        decoded = torch.cat([decoder.decode(currents[:30], etas[:30]),
                             decoder.decode(currents[30:], etas[30:])])
        results.append((emitted, decoded, encoder.f, decoder.y))
    assert results[0][0].shape == (48, 4, 3, 5) and results[0][1].shape == (48, 4, 10)
    for fused, plain in zip(*results):
        assert fused.dtype == dtype and torch.equal(fused, plain)
    assert results[0][0][0].sub(0.5 * (1.0 - x)).abs().max() < 1e-6  # e_1 = (1 - x) / 2


def test_network_outputs_identical_with_and_without_kernels(zoo_cache, monkeypatch):
    """Paper CNN: only exact targets (ReLU, max), so the kernels change no bit."""
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_cnn")
    snn = sl.convert(model, x_tr[:128])
    fused = snn(x_te[:16], [16, 64])
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert torch.equal(snn(x_te[:16], [16, 64]), fused)


def test_network_with_exp_based_targets_agrees_without_kernels(zoo_cache, monkeypatch):
    """Extended attention model (exp, erf GELU): last-bit differences of g flip rare spikes;
    the decoded outputs agree to 1e-3 relative and every prediction is the same."""
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_attention")
    snn = sl.convert(model, x_tr[:128], dynamics="extended")
    fused = snn(x_te[:16], [16, 64])
    monkeypatch.setattr(kernels, "ENABLED", False)
    plain = snn(x_te[:16], [16, 64])
    assert ((fused - plain).norm() / plain.norm()).item() <= 1e-3
    assert torch.equal(fused.argmax(-1), plain.argmax(-1))


@pytest.mark.parametrize("dynamics", ["paper", "extended"])
def test_a_strided_value_read_by_two_populations_is_copied_once_per_block(zoo_cache, dynamics,
                                                                          monkeypatch):
    """The attention model's LayerNorms normalise a transposed token tensor: u = x - mean is
    strided and feeds both the square and the x/sqrt(var) populations. Both get one contiguous
    copy made for the block, and the outputs equal those of a run where each population makes
    its own copy."""
    from signgd_lab.conversion.neuron_ops import NeuronOp

    model, (x_tr, _), (x_te, _) = zoo_cache("digits_attention")
    snn = sl.convert(model, x_tr[:128], dynamics=dynamics)
    shared_nodes = snn.shared_inputs
    assert set(shared_nodes) == {f"{p}_{n}" for p in ("square", "rsqrt_div")
                                 for n in ("norm1", "norm2")}
    for norm in ("norm1", "norm2"):
        u = shared_nodes[f"square_{norm}"][0]
        assert shared_nodes[f"rsqrt_div_{norm}"] == (u, None) and snn.shared_readers[u] == 2
    seen: dict[str, list[torch.Tensor]] = {}
    simulate = NeuronOp.simulate

    def recording(self, dynamics, state, currents, *args, **kwargs):
        seen.setdefault(snn.neuron_names[id(self)], []).append(currents[0])
        return simulate(self, dynamics, state, currents, *args, **kwargs)

    monkeypatch.setattr(NeuronOp, "simulate", recording)
    shared = snn(x_te[:8], [6, 16], block_steps=4)
    for norm in ("norm1", "norm2"):
        squares, divides = seen[f"square_{norm}"], seen[f"rsqrt_div_{norm}"]
        assert len(squares) == len(divides) == 5  # blocks ending at 4, 6, 10, 14, 16
        for a, b in zip(squares, divides):
            assert a.is_contiguous() and a.data_ptr() == b.data_ptr()
    monkeypatch.setattr(snn, "shared_inputs", {})
    seen.clear()
    assert torch.equal(snn(x_te[:8], [6, 16], block_steps=4), shared)
    assert not seen["square_norm1"][0].is_contiguous()  # each population copies on its own


@pytest.mark.parametrize("dynamics", ["paper", "extended"])
def test_a_network_runs_under_inference_mode(zoo_cache, dynamics):
    """torch.inference_mode() makes tensors without a version counter (the block's step sizes,
    the corrections computed in the run): the kernels track those by memory alone and give
    the numbers of a no_grad run, on the attention model (row, product and chain-free
    elementwise kernels)."""
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_attention")
    snn = sl.convert(model, x_tr[:128], dynamics=dynamics)
    with torch.inference_mode():
        inferred = snn(x_te[:4], [5, 16], block_steps=4)
    with torch.no_grad():
        assert torch.equal(snn(x_te[:4], [5, 16], block_steps=4), inferred)


def test_a_current_with_one_step_is_broadcast_over_the_block(monkeypatch):
    """A drive whose current has a time dimension of 1 holds for every step of the block, in
    the kernels as in the torch path (the row kernel's second input here)."""
    g = torch.Generator().manual_seed(0)
    cur1, cur2 = torch.rand(9, 3, 4, 10, generator=g) - 0.25, torch.rand(1, 3, 4, 1, generator=g)
    off1, off2 = torch.rand(1, 4, 10, generator=g), torch.rand(1, 4, 1, generator=g)
    x1, x2 = torch.rand(3, 4, 10, generator=g), torch.rand(3, 4, 1, generator=g) + 1.0
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        state = NeuronState((x1.clone(), x2.clone()), torch.zeros(3, 4, 10))
        runs.append((SignGDNeuron(get_target("rsqrt_div")).run(
            state, (Drive(cur1, off1), Drive(cur2, off2)), ETAS[:9]), state))
    (fused, s1), (plain, s2) = runs
    assert isinstance(s1.kernel, kernels.PopulationKernel)
    assert torch.equal(fused, plain) and torch.equal(s1.x_hat[1], s2.x_hat[1])


@pytest.mark.parametrize("layout", ["cast", "strided"])
def test_step_sizes_edited_between_blocks_are_read_again(layout):
    """The step-size array a block's populations share is kept only while it views the
    tensor's memory: a cast or strided tensor edited through ``.data`` between two calls (torch's
    version counter does not see it) gives the edited steps."""
    etas = ETAS[:6].double() if layout == "cast" else torch.stack([ETAS[:6], ETAS[:6]], 1)[:, 0]
    g = torch.Generator().manual_seed(2)
    x0, current = torch.rand(2, 5, generator=g), torch.rand(6, 2, 5, generator=g)
    offset = torch.ones(1, 5)
    kernels.estimates(x0.clone(), current, offset, etas)
    etas.data.mul_(2.0)
    edited = kernels.estimates(x0.clone(), current, offset, etas)
    fresh = kernels.estimates(x0.clone(), current, offset, etas.float().contiguous().clone())
    assert torch.equal(edited, fresh)


def test_a_kernel_refuses_a_state_it_cannot_update_in_place():
    """A kernel writes the state through its memory: a strided state would be copied and the
    update lost, so it is refused by name."""
    x_hat = torch.rand(5, 2).t()  # (2, 5), not contiguous
    with pytest.raises(ValueError, match="must be contiguous"):
        kernels.estimates(x_hat, torch.rand(3, 2, 5), torch.ones(1, 5), ETAS[:3])


@pytest.mark.slow
def test_compiled_step_matches_plain_step():
    """The torch.compile step used on CUDA, checked on CPU (slow: one compilation)."""
    from signgd_lab.dynamics import compiled_step

    g = torch.Generator().manual_seed(1)
    v, target = torch.rand(64, generator=g), torch.rand(64, generator=g)
    target[:4] = v[:4]  # ties: fire with tie=True, rest with tie=False
    eta = torch.tensor(0.15)
    for tie in (True, False):
        fused_v, fused_s = compiled_step.fused_step(v, target, eta, tie)
        s = (v >= target if tie else v > target).float()
        assert torch.equal(fused_s, s) and torch.equal(fused_v, v - eta * (2 * s - 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_network_runs_the_compiled_step_and_matches_cpu(monkeypatch):
    """A converted network on CUDA goes through the compiled membrane step (no observer, so
    not the step-by-step branch) and gives the CPU kernels' outputs (float64, exact targets)."""
    from torch import nn

    from signgd_lab.dynamics import compiled_step, neurons

    calls = []
    monkeypatch.setattr(neurons, "fused_step",
                        lambda *a: calls.append(1) or compiled_step.fused_step(*a))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 3)).double().eval()
    x = torch.rand(32, 6, dtype=torch.float64)
    cpu = sl.convert(model, x, dynamics="extended")(x, [16, 64])
    gpu_net = sl.convert(model.cuda(), x.cuda(), dynamics="extended")
    gpu = gpu_net(x.cuda(), [16, 64])
    assert calls and gpu.is_cuda
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-9)
