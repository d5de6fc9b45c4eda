"""Where the time of SNN(T=128) / 128 ANN forwards goes, and how low it could go with the present
executor. One process per model (batch 64, paper dynamics, one torch thread, one numba thread);
these runs are timed side by side in every repeat:

* ``ann``: 128 forward passes of the ANN;
* ``executor``: the spiking network with every neuron population made free (a neuron module or
  a max-pool chain returns zeros of its output's shape instead of simulating): what the
  executor itself costs (encoder, the affine ops on the block's rows, decoder, the block loop);
* ``executor + products``: the same with the matmul product populations simulated (attention);
* ``snn``: the spiking network as it runs (its default block length), and with blocks of 4 and
  of 1 step: shorter blocks keep the data in cache but pay the per-block cost more often.

``kernel floor`` adds to ``executor`` every population's neuron-steps (counted in a free run)
at the speed of its kernel with the data in the core's L2, timed in the same process with the
state reset before each call: a prepared ``kernels.PopulationKernel`` in the population's layout
(elementwise, or a second input per row) on 16 samples x 48 neurons, and
``kernels.product_steps`` on 16 (sample, head) pairs of 16 x 16 x 16 product neurons (a max-pool
chain counts as its max populations at the elementwise max kernel's speed). Each is the
difference between a long and a short block (40 and 8 steps; 12 and 3 for products) over the
neuron-steps between them, so the per-call Python cost drops out. It is what the run would cost
if no population paid for memory traffic, copies or calls. The
per-block cost is (1-step run - default run) / (extra blocks). Writes benchmarks/RESULTS.md.

    python benchmarks/engine_floor.py [--repeats 9] [--rounds 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import code_measured, run_child, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("digits_cnn", "digits_mlp", "digits_attention")

CHILD = r"""
import contextlib, json, math, statistics, sys, time, types
import torch
torch.set_num_threads(1)
import signgd_lab as sl
from signgd_lab.conversion.neuron_ops import MatmulNeuronOp, MaxPoolChain, NeuronOp
from signgd_lab.dynamics import kernels
name, repeats = sys.argv[1], int(sys.argv[2])
model, (x_tr, _), (x_te, _) = sl.zoo.load(name)
x = x_te[:64]
snn = sl.convert(model, x_tr[:256], dynamics="paper")
modules = list(snn.graph_module.modules())
neuron_steps = {}  # population key (see key_of) -> neuron-steps of the free runs

def key_of(module, currents):
    # "product", or (kernel, param, tie, arity, row layout) of a neuron module
    if isinstance(module, MatmulNeuronOp):
        return "product"
    t = module.simulated_target()
    row = len(currents) == 2 and currents[1].shape[-1] == 1 != currents[0].shape[-1]
    return (t.kernel, t.param, t.tie_fires, len(currents), row)

def count(key, steps):
    neuron_steps[key] = neuron_steps.get(key, 0) + steps

def free(self, dynamics, state, currents, offsets, etas, observer=None):
    shape = self.membrane_shape(currents)  # (c, B, ...); products (c, ..., N, K, M)
    key = key_of(self, currents)
    count(key, shape.numel())
    out = (*shape[:-3], shape[-3], shape[-1]) if key == "product" else shape  # (c, ..., N, M)
    return torch.zeros(out, dtype=currents[0].dtype)

def free_chain(chain, y):
    # a max-pool chain: its k - 1 max populations, each over one window of y (c*B rows)
    window = y[chain.window_index(0)]
    t = chain.chain[0].simulated_target()
    count((t.kernel, t.param, t.tie_fires, 2, False), len(chain.chain) * window.numel())
    return torch.zeros(window.shape, dtype=y.dtype)

@contextlib.contextmanager
def shadowed(patches):
    # (module, attribute, function): instance attributes that shadow the methods the runtime
    # calls, deleted afterwards
    for m, attr, fn in patches:
        setattr(m, attr, fn)
    try:
        yield
    finally:
        for m, attr, _ in patches:
            delattr(m, attr)

def populations_free(keep_products):
    return shadowed(
        [(m, "forward", types.MethodType(free_chain, m)) for m in modules
         if isinstance(m, MaxPoolChain)]
        + [(m, "simulate", types.MethodType(free, m)) for m in modules if isinstance(m, NeuronOp)
           and not (keep_products and isinstance(m, MatmulNeuronOp))])

def timed(m, seconds, steps):
    # m's simulate, its CPU time and neuron-steps added up by key_of
    run = m.simulate

    def simulate(dynamics, state, currents, offsets, etas, observer=None):
        t = time.process_time()
        out = run(dynamics, state, currents, offsets, etas, observer)
        key = key_of(m, currents)
        seconds[key] = seconds.get(key, 0.0) + time.process_time() - t
        steps[key] = steps.get(key, 0) + m.membrane_shape(currents).numel()
        return out
    return simulate

def populations_timed(seconds, steps):
    return shadowed([(m, "simulate", timed(m, seconds, steps)) for m in modules
                     if isinstance(m, NeuronOp)])

def executor(keep_products):
    with populations_free(keep_products):
        snn(x, [128])

def fastest(fn, reset, calls=25):
    best = float("inf")
    for _ in range(calls):
        reset()  # the same state every call
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best

def per_step(make, short, long):
    # (fastest long call - fastest short call) / the neuron-steps between them: the kernel's
    # cost without the per-call Python overhead; make(steps) -> (call, reset, neuron-steps)
    (f1, r1, n1), (f2, r2, n2) = make(short), make(long)
    return (fastest(f2, r2) - fastest(f1, r1)) / (n2 - n1)

def in_cache_seconds(key, g):
    # seconds per neuron-step of a population's kernel, its data in the core's L2
    etas = 0.15 * 0.95 ** torch.arange(64, dtype=torch.float32)
    if key == "product":  # 16 (sample, head) pairs of 16 x 16 x 16 neurons: 256 KB
        p, n = 16, 16
        v = torch.zeros(p, n, n, n)

        def make(steps):
            a = torch.randn(steps, p, n, n, generator=g)
            b = torch.randn(steps, p, n, n, generator=g)
            return (lambda: kernels.product_steps(v, a, b, etas[:steps], True), v.zero_,
                    steps * v.numel())

        return per_step(make, 3, 12)
    kernel, param, tie, arity, row = key
    if kernel is None:
        raise SystemExit(f"{name}: a population without a kernel has no in-cache speed")
    batch, rows, size = 16, 3, 16  # up to 40 steps: 123 KB per current and for the spikes
    shapes = [(rows, size), (rows, 1) if row else (rows, size)][:arity]
    off = tuple(torch.zeros(1, *s) for s in shapes)
    x0 = tuple(torch.randn(batch, *s, generator=g) + (i + 1) for i, s in enumerate(shapes))
    x_hat = tuple(x.clone() for x in x0)
    v = torch.zeros(batch, rows, size)
    run = kernels.PopulationKernel(kernel, param, tie, off, x_hat, v, None, None, None, None,
                                   None, False)  # prepared once, as a population's is

    def reset():
        for x, x_start in zip(x_hat, x0):
            x.copy_(x_start)
        v.zero_()

    def make(steps):
        cur = tuple(torch.randn(steps, batch, *s, generator=g) + (i + 1)
                    for i, s in enumerate(shapes))
        return lambda: run(cur, x_hat, v, etas[:steps]), reset, steps * v.numel()

    return per_step(make, 8, 40)

runs = {"ann": lambda: [model(x) for _ in range(128)], "snn": lambda: snn(x, [128]),
        "snn_4": lambda: snn(x, [128], block_steps=4),
        "snn_1": lambda: snn(x, [128], block_steps=1),
        "executor": lambda: executor(False), "executor_products": lambda: executor(True)}
times = {k: [] for k in runs}
with torch.no_grad():
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for key, fn in runs.items():
            t = time.process_time()
            fn()
            times[key].append(time.process_time() - t)
    neuron_steps.clear()
    executor(False)  # counts one run's neuron-steps
    g = torch.Generator().manual_seed(0)
    in_cache = {key: in_cache_seconds(key, g) for key in neuron_steps}
    kernel_s = sum(n * in_cache[key] for key, n in neuron_steps.items())
    as_run = []  # three timed runs; the least disturbed total of each key
    for _ in range(3):
        run_s, run_steps = {}, {}
        with populations_timed(run_s, run_steps):
            snn(x, [128])
        as_run.append((run_s, run_steps))
best = {key: min(r[0][key] for r in as_run) for key in as_run[0][0]}
per_target = [("product" if key == "product" else key[0] + (" (row)" if key[4] else ""),
               1e9 * best[key] / as_run[0][1][key], 1e9 * in_cache[key], 1e3 * best[key])
              for key in best]
ratios = {k: statistics.median(t / a for t, a in zip(v, times["ann"])) for k, v in times.items()}
ann = statistics.median(times["ann"])
ratios["kernel_floor"] = ratios["executor"] + kernel_s / ann
block = snn.block_steps(x.shape[1:], x.shape[0], 128)
per_block = (statistics.median(times["snn_1"]) - statistics.median(times["snn"])) / \
    (128 - math.ceil(128 / block))  # what each extra block costs
print(json.dumps({"package": sl.__file__, "ratios": ratios, "ann_ms": 1e3 * ann,
                  "block": block, "per_block_ms": 1e3 * per_block,
                  "products": sum(isinstance(m, MatmulNeuronOp) for m in modules),
                  "per_target": per_target}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per model, each on its own row (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the children run (the section's header names this process's)
    table = ["| model | process | ANN, 128 forwards (ms) | executor | executor + products | "
             "kernel floor | snn (default block) | snn, 4-step blocks | snn, 1-step blocks | "
             "cost per block (ms) |", "|---|---|---|---|---|---|---|---|---|---|"]
    targets = ["| model | process | target | ms per run | ns per neuron-step as run | "
               "in cache |", "|---|---|---|---|---|---|"]
    for name in MODELS:
        for round_ in range(1, args.rounds + 1):
            r = run_child(ROOT, CHILD, (name, str(args.repeats)), {"NUMBA_NUM_THREADS": "1"})
            q = r["ratios"]
            products = f"{q['executor_products']:.2f}" if r["products"] else "n/a"
            table.append(f"| {name} | {round_} | {r['ann_ms']:.0f} | {q['executor']:.2f} | "
                         f"{products} | {q['kernel_floor']:.2f} | {q['snn']:.2f} "
                         f"({r['block']} steps) | {q['snn_4']:.2f} | {q['snn_1']:.2f} | "
                         f"{r['per_block_ms']:.2f} |")
            print(table[-1], flush=True)
            for target, as_run, cached, ms in sorted(r["per_target"], key=lambda t: -t[3]):
                targets.append(f"| {name} | {round_} | {target} | {ms:.1f} | {as_run:.2f} | "
                               f"{cached:.2f} |")
    write_section(
        "Engine floor: the executor without neuron dynamics",
        code_measured(None) + "\n\nBatch 64, T=128, paper dynamics, one torch and one numba "
        "thread, CPU time of the process. Each figure is a run's time over the ANN's 128 "
        f"forwards timed in the same repeat, the median over {args.repeats} repeats. "
        "`executor`: every population free (it returns zeros of its output's shape); "
        "`executor + products`: the matmul product populations simulated as well; "
        "`kernel floor`: `executor` plus every population's neuron-steps at the speed of its "
        "kernel with its data in the core's L2 (in the population's layout, state reset before each "
        "call, the difference between a long and a short block, so no per-call cost); `snn`: the network as it runs, with its default block length and with blocks "
        "of 4 and of 1 step; cost per block: (1-step run - default run) / extra blocks."
        "\n\n" + "\n".join(table)
        + "\n\nThe neuron modules' populations one by one, in three more runs of the same "
        "process (the lowest total of each target), by target: CPU time per run of T=128, and "
        "nanoseconds per neuron-step as run (estimates, copies of strided inputs, calls and "
        "the kernel on a whole block's data) and of the kernel alone with its data in L2. "
        "`(row)`: a second input with one value per row (softmax's sum, LayerNorm's variance). "
        "Max-pool chains (the CNN) are not neuron modules and are left out.\n\n"
        + "\n".join(targets),
        f"python benchmarks/engine_floor.py --repeats {args.repeats} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
