"""Probes: per-layer errors, bounded traces, spike statistics."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import signgd_lab as sl
from signgd_lab.conversion import ConversionError
from signgd_lab.probes import E_AC_PJ, E_MAC_PJ, ActivationProbe, ann_activations, membrane_targets


@pytest.fixture(scope="module")
def cnn(zoo_cache):
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_cnn")
    return model, sl.convert(model, x_tr[:256]), x_te[:48]


def test_layer_error_table_covers_every_layer_and_falls_with_T(cnn):
    model, snn, x = cnn
    ts = [8, 32, 128]
    table = sl.layer_errors(model, snn, x, ts)
    assert table.layers == list(snn.neurons) + ["output"]
    assert table.rel_l2.shape == (len(snn.neurons) + 1, 3)
    assert (table.rel_l2[:, 2] < table.rel_l2[:, 0]).all()
    assert (table.cosine[:, 2] > 0.9).all()
    # the output row is the network's own error against the model
    out = snn(x, ts)
    ref = model(x)
    assert table.rel_l2[-1, 1].item() == pytest.approx(((out[1] - ref).norm() / ref.norm()).item(), rel=1e-5)
    # every entry of a neuron layer, worked out one by one from the probe's decoded values
    layer = table.layers[1]
    probe = ActivationProbe([layer], ts)
    snn(x, ts, probes=[probe])
    ann = ann_activations(snn, x, [layer])[layer][1].flatten().double()
    for j, t in enumerate(ts):
        est = probe.values[(layer, t)].flatten().double()
        assert table.rel_l2[1, j].item() == pytest.approx(((est - ann).norm() / ann.norm()).item(),
                                                          rel=1e-6)
        assert table.max_abs[1, j].item() == pytest.approx((est - ann).abs().max().item(), rel=1e-6)
        cos = (est @ ann / (est.norm() * ann.norm())).item()
        assert table.cosine[1, j].item() == pytest.approx(cos, rel=1e-6)
    assert table.worst_layer() in snn.neurons
    rows = table.to_rows()
    assert len(rows) == (len(snn.neurons) + 1) * 3 and {"layer", "T", "rel_l2", "max_abs", "cosine"} <= set(rows[0])


def test_layer_errors_of_chosen_layers_only(cnn):
    model, snn, x = cnn
    first = next(iter(snn.neurons))
    table = sl.layer_errors(model, snn, x, [16], layers=[first])
    assert table.layers == [first, "output"]
    with pytest.raises(ConversionError, match="unknown layer"):
        sl.layer_errors(model, snn, x, [16], layers=["nope"])


def test_trace_probe_records_only_what_was_asked(cnn):
    model, snn, x = cnn
    layer = "relu_6"
    # neurons of sample 1 with clearly positive targets (on the rescaled inputs, neuron units)
    targets = membrane_targets(snn, x[:4], layer)[1].flatten()
    picks = (targets > 0.2).nonzero().flatten()[:3].tolist()
    assert len(picks) == 3
    probe = sl.TraceProbe(layer, neurons=picks, sample=1)
    snn(x[:4], [40], probes=[probe])
    assert probe.v.shape == (40, 3) and probe.spikes.shape == (40, 3) and probe.x_hat.shape == (40, 3)
    assert set(probe.spikes.unique().tolist()) <= {0.0, 1.0}
    # v follows the signGD update from the recorded spikes: v_t = v_{t-1} - eta_t (2 s_t - 1)
    etas = snn.dynamics.etas(40)
    v = -torch.cumsum(etas[:, None] * (2 * probe.spikes - 1), 0)
    assert torch.allclose(v, probe.v, atol=1e-5)
    # the traced neurons converge to their targets, which the output scale takes back to the
    # ANN's activation at that node
    assert torch.allclose(probe.v[-1], targets[picks], atol=0.05)
    ann_out = ann_activations(snn, x[:4], [layer])[layer][1][1].flatten()[picks]
    scale = snn.neurons[layer].out_scale.flatten()[picks]
    assert torch.equal(targets[picks] * scale, ann_out) and (scale != 1).all()
    with pytest.raises(ConversionError, match="indices"):
        snn(x[:2], [4], probes=[sl.TraceProbe(layer, neurons=[10**6])])


def test_spike_stats_and_energy(cnn):
    model, snn, x = cnn
    stats = sl.spike_stats(snn, x, 32)
    assert set(stats.firing_rate) == set(snn.neurons)
    assert all(0.0 < r < 1.0 for r in stats.firing_rate.values())
    assert stats.sops > 0 and stats.dense_macs > 0 and stats.ann_macs > 0
    # the first conv sees the encoder's real values: 32 steps of its MACs per sample
    first = model[0]
    macs_first = 16 * 8 * 8 * 1 * 9
    assert stats.dense_macs == pytest.approx(32 * macs_first)
    assert stats.snn_energy_uj == pytest.approx((stats.sops * E_AC_PJ + stats.dense_macs * E_MAC_PJ) * 1e-6)
    assert stats.ann_energy_uj == pytest.approx(stats.ann_macs * E_MAC_PJ * 1e-6)
    assert first.out_channels == 16
    # more steps -> more synaptic operations
    assert sl.spike_stats(snn, x, 64).sops > stats.sops


def test_spike_counts_match_trace_of_whole_small_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    snn = sl.convert(net, torch.rand(16, 3))
    x = torch.rand(1, 3)
    probe = sl.TraceProbe("relu_1", neurons=4)
    snn(x, [25], probes=[probe])
    stats = sl.spike_stats(snn, x, 25)
    assert stats.spikes["relu_1"] == probe.spikes.sum().item()


def test_spike_stats_over_T_equals_one_run_per_T(cnn):
    """One run of max(T) steps gives what a separate run per T gives."""
    _, snn, x = cnn
    x = x[:4]
    together = sl.spike_stats_over_T(snn, x, [4, 12, 20])
    for stats in together:
        alone = sl.spike_stats(snn, x, stats.T)
        assert stats.spikes == pytest.approx(alone.spikes, rel=1e-12)
        assert stats.firing_rate == pytest.approx(alone.firing_rate, rel=1e-12)
        assert stats.sops == pytest.approx(alone.sops, rel=1e-9) and stats.sops > 0
        assert stats.ann_macs == alone.ann_macs
    assert together[0].sops < together[1].sops < together[2].sops


def test_debug_run_gives_what_the_separate_probes_give_from_one_run(cnn):
    """One simulation: the same error table, outputs, spike statistics and traces as
    layer_errors, a plain run, spike_stats and a TraceProbe run one by one."""
    model, snn, x = cnn
    ts = [8, 32]
    layer = list(snn.neurons)[1]
    calls = []
    hook = snn.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        run = sl.debug_run(model, snn, x, ts, {layer: [0, 5, 9]})
    finally:
        hook.remove()
    assert len(calls) == 1
    table = sl.layer_errors(model, snn, x, ts)
    assert torch.equal(run.table.rel_l2, table.rel_l2) and run.table.layers == table.layers
    assert torch.equal(run.outputs, snn(x, ts))
    stats = sl.spike_stats(snn, x, ts[-1])
    assert run.stats.spikes == pytest.approx(stats.spikes) and run.stats.sops == pytest.approx(stats.sops)
    assert run.stats.ann_macs == pytest.approx(stats.ann_macs)
    probe = sl.TraceProbe(layer, neurons=[0, 5, 9])
    snn(x, [ts[-1]], probes=[probe])
    trace = run.traces[layer]
    assert trace.v.shape == (32, 3) and torch.equal(trace.v, probe.v)
    assert torch.equal(trace.spikes, probe.spikes)
    assert set(run.values) == {(name, t) for name in snn.neurons for t in ts}


def test_blocks_end_at_every_requested_step():
    from signgd_lab.conversion.timestamps import block_bounds

    assert block_bounds(20, [5, 13], 8) == [(0, 5), (5, 13), (13, 20)]
    assert block_bounds(20, [3], 4) == [(0, 3), (3, 7), (7, 11), (11, 15), (15, 19), (19, 20)]
    assert block_bounds(6, [9, 0], 100) == [(0, 6)]  # stops beyond the run or at 0 are ignored


def test_probes_read_between_blocks_and_keep_the_fused_kernels(cnn, monkeypatch):
    """layer_errors and spike_stats_over_T run the same kernel calls as a plain run, their
    values at T equal a run that stops at T, and the kernels' spike counts equal the torch
    path's (kernels off)."""
    from signgd_lab.dynamics import kernels

    model, snn, x = cnn
    x = x[:8]
    ts = [5, 13, 24]  # no common divisor: a gcd-block scheme would step one at a time
    calls = []
    for owner, name in ((kernels.PopulationKernel, "__call__"), (kernels, "max_chain_steps")):
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, f=original, **k: calls.append(1) or f(*a, **k))
    snn(x, ts)
    plain = len(calls)
    assert plain > 0
    table = sl.layer_errors(model, snn, x, ts)
    assert len(calls) == 2 * plain
    together = sl.spike_stats_over_T(snn, x, ts)
    assert len(calls) == 3 * plain
    for j, t in enumerate(ts):  # each T as if the run stopped there
        alone = sl.layer_errors(model, snn, x, [t])
        assert torch.equal(alone.rel_l2[:, 0], table.rel_l2[:, j])
    monkeypatch.setattr(kernels, "ENABLED", False)
    calls.clear()
    by_torch = sl.spike_stats_over_T(snn, x, ts)
    assert not calls
    for fused, plain_stats in zip(together, by_torch):
        assert fused.spikes == plain_stats.spikes and fused.sops == plain_stats.sops
        assert all(v > 0 for v in fused.spikes.values())


def test_membrane_targets_of_product_neurons_are_their_own_products():
    """Regression (review): for a matmul population membrane_targets gave the summed (N, M)
    matmul, which a TraceProbe's (N, K, M) indices overran; now one product per membrane."""
    torch.manual_seed(0)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0].flatten(1)

    model = Attn().eval()
    x = torch.randn(16, 4, 8)
    snn = sl.convert(model, x, dynamics="extended")
    layer = next(n for n, m in snn.neurons.items() if isinstance(m, sl.conversion.MatmulNeuronOp))
    targets = membrane_targets(snn, x[:2], layer)
    inputs, out = ann_activations(snn, x[:2], [layer])[layer]
    assert targets.shape == snn.neurons[layer].membrane_shape(inputs)  # (B, H, N, K, M)
    module = snn.neurons[layer]
    assert torch.allclose(module.scale_output(targets.sum(-2)), out, atol=1e-5)
    probe = sl.TraceProbe(layer, neurons=6)
    snn(x[:2], [200], probes=[probe])
    assert torch.allclose(probe.v[-1], targets[0].flatten()[probe.indices], atol=0.02)


def test_spike_stats_count_every_weight_layer_and_name_what_they_cannot(zoo_cache):
    """The attention model's q/k/v/out projections (function calls after the attention
    decomposition) are counted: ann_macs is the sum over its layers, worked out from their
    shapes. A matmul with a constant matrix is not counted, and spike_stats says so."""
    model, (x_tr, _), (x_te, _) = zoo_cache("digits_attention")
    snn = sl.convert(model, x_tr[:64])
    tokens, dim, heads = 16, model.attn.embed_dim, model.attn.num_heads
    hidden = model.mlp[0].out_features
    expected = (tokens * dim * 4  # the 2x2 patch embedding, one input channel
                + 4 * tokens * dim * dim  # q, k, v and output projections
                + 2 * tokens * tokens * dim  # q k^T and p v over all heads
                + 2 * tokens * dim * hidden + dim * model.head.out_features)
    assert heads > 1 and sl.probes.ann_macs(snn, x_te[:1]) == expected
    stats = sl.spike_stats(snn, x_te[:4], 16)
    assert stats.uncounted == [] and stats.ann_macs == expected

    class ConstantMatmul(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 8)
            self.m = nn.Parameter(torch.randn(8, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x.flatten(1))) @ self.m

    small = ConstantMatmul().eval()
    snn = sl.convert(small, x_tr[:32])
    with pytest.warns(UserWarning, match="matmul are not counted"):
        stats = sl.spike_stats(snn, x_te[:4], 8)
    assert stats.uncounted == ["matmul"] and stats.ann_macs == 64 * 8  # per sample
    with pytest.warns(UserWarning, match="matmul are not counted"):
        run = sl.debug_run(small, snn, x_te[:4], [8], {})
    assert run.stats.uncounted == ["matmul"] and run.stats.ann_macs == 64 * 8


def test_ann_macs_count_layers_on_token_rows_and_constants_once(zoo_cache):
    """A Linear on (B * 8, 8) token rows runs on steps x B x 8 rows in a block, a Linear on a
    constant once a block: the counting run's ann_macs equals an ANN forward's count, which
    counts the constant layer once per inference."""
    _, (x_tr, _), (x_te, _) = zoo_cache("digits_cnn")

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.p = nn.Linear(8, 16), nn.Linear(128, 10), nn.Linear(8, 8)
            self.pos = nn.Parameter(torch.randn(8, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = x.reshape(-1, 8, 8) + self.p(self.pos)  # (B, 8, 8)
            h = torch.relu(self.a(h.reshape(-1, 8)))  # (B * 8, 16)
            return self.b(h.reshape(x.shape[0], 128))

    snn = sl.convert(Tokens().eval(), x_tr[:64])
    for batch in (1, 3):
        x = x_te[:batch]
        per_sample = 8 * 8 * 16 + 128 * 10 + 8 * 8 * 8 / batch
        assert sl.probes.ann_macs(snn, x) / batch == per_sample
        assert [s.ann_macs for s in sl.spike_stats_over_T(snn, x, [1, 5, 40])] == [per_sample] * 3
        assert sl.debug_run(snn.graph_module, snn, x, [4], {}).stats.ann_macs == per_sample
