"""Where the time of SNN(T=128) / 128 ANN forwards goes, and how low it could go with the present
executor. One process per model (batch 64, paper dynamics, one torch thread, one numba thread);
four runs timed side by side in every repeat:

* ``ann``: 128 forward passes of the ANN;
* ``executor``: the spiking network with every neuron population made free (it returns zeros of
  its output's shape instead of simulating): what the executor itself costs (encoder, the
  affine ops on the block's rows, decoder, the block loop);
* ``executor + products``: the same with the matmul product populations simulated (attention);
* ``snn``: the spiking network as it runs (its default block length), and with blocks of 4 and
  of 1 step: shorter blocks keep the data in cache but pay the per-block cost more often.

``kernel floor`` adds to ``executor`` every population's neuron-steps (counted in a free run)
at the speed of its kernel on data in cache, timed in the same process: a prepared
``kernels.PopulationKernel`` on a block of 32 steps x 64 samples x 96 neurons, and
``kernels.product_steps`` on 16 (sample, head) pairs of 16 x 16 x 16 product neurons, 9 steps.
It is what the run would cost if no population paid for memory traffic or calls.
Writes benchmarks/RESULTS.md.

    python benchmarks/engine_floor.py [--repeats 9] [--rounds 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import code_measured, run_child, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("digits_cnn", "digits_mlp", "digits_attention")

CHILD = r"""
import contextlib, json, statistics, sys, time, types
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
neuron_steps = {}  # (kernel, param, tie, arity), or "product" -> neuron-steps of the free runs

def population_key(module, currents):
    if isinstance(module, MatmulNeuronOp):
        return "product"
    t = module.simulated_target()
    return (t.kernel, t.param, t.tie_fires, len(currents))

def free(self, dynamics, state, currents, offsets, etas, observer=None):
    shape = self.membrane_shape(currents)  # (c, B, ...); products (c, ..., N, K, M)
    key = population_key(self, currents)
    neuron_steps[key] = neuron_steps.get(key, 0) + shape.numel()
    out = (*shape[:-3], shape[-3], shape[-1]) if key == "product" else shape  # (c, ..., N, M)
    return torch.zeros(out, dtype=currents[0].dtype)

@contextlib.contextmanager
def populations_free(keep_products):
    # instance attributes shadow the methods the runtime calls; deleted afterwards
    patched = []
    for m in modules:
        if isinstance(m, MaxPoolChain):
            m.forward = m.unfused
            patched.append((m, "forward"))
        elif isinstance(m, NeuronOp) and not (keep_products and isinstance(m, MatmulNeuronOp)):
            m.simulate = types.MethodType(free, m)
            patched.append((m, "simulate"))
    try:
        yield
    finally:
        for m, attr in patched:
            delattr(m, attr)

@contextlib.contextmanager
def populations_timed(seconds, steps):
    # each neuron module's simulate timed, by the key of its in-cache speed
    for m in modules:
        if isinstance(m, NeuronOp):
            def simulate(dynamics, state, currents, offsets, etas, observer=None, m=m,
                         run=m.simulate):
                t = time.perf_counter()
                out = run(dynamics, state, currents, offsets, etas, observer)
                key = population_key(m, currents)
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t
                steps[key] = steps.get(key, 0) + m.membrane_shape(currents).numel()
                return out
            m.simulate = simulate
    try:
        yield
    finally:
        for m in modules:
            if isinstance(m, NeuronOp):
                del m.simulate

def executor(keep_products):
    with populations_free(keep_products):
        snn(x, [128])

def fastest(fn, calls=15):
    best = float("inf")
    for _ in range(calls):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best

def in_cache_seconds(key, g):
    # seconds per neuron-step of a population's kernel with its data in cache
    if key == "product":
        p, n, steps = 16, 16, 9
        v = torch.zeros(p, n, n, n)
        a, b = torch.randn(steps, p, n, n, generator=g), torch.randn(steps, p, n, n, generator=g)
        etas = 0.15 * 0.95 ** torch.arange(steps, dtype=torch.float32)
        return fastest(lambda: kernels.product_steps(v, a, b, etas, True)) / (steps * v.numel())
    kernel, param, tie, arity = key
    if kernel is None:
        raise SystemExit(f"{name}: a population without a kernel has no in-cache speed")
    steps, batch, size = 32, 64, 96
    cur = tuple(torch.rand(steps, batch, size, generator=g) + 1 for _ in range(arity))
    off = tuple(torch.zeros(1, size) for _ in range(arity))
    x_hat = tuple(torch.rand(batch, size, generator=g) + 1 for _ in range(arity))
    v = torch.zeros(batch, size)
    run = kernels.PopulationKernel(kernel, param, tie, off, x_hat, v, None, None, None, None,
                                   None, False)  # prepared once, as a population's is
    etas = 0.15 * 0.95 ** torch.arange(steps, dtype=torch.float32)
    return fastest(lambda: run(cur, x_hat, v, etas)) / (steps * batch * size)

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
    run_s, run_steps = {}, {}
    with populations_timed(run_s, run_steps):
        snn(x, [128])
per_target = [("product" if key == "product" else f"{key[0]}", 1e9 * run_s[key] / run_steps[key],
               1e9 * in_cache[key], 1e3 * run_s[key]) for key in run_s]
ratios = {k: statistics.median(t / a for t, a in zip(v, times["ann"])) for k, v in times.items()}
ann = statistics.median(times["ann"])
ratios["kernel_floor"] = ratios["executor"] + kernel_s / ann
print(json.dumps({"package": sl.__file__, "ratios": ratios, "ann_ms": 1e3 * ann,
                  "block": snn.block_steps(x.shape[1:], x.shape[0], 128),
                  "products": sum(isinstance(m, MatmulNeuronOp) for m in modules),
                  "per_target": per_target}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per model, each on its own row (the machine is shared)")
    args = parser.parse_args()
    table = ["| model | process | ANN, 128 forwards (ms) | executor | executor + products | "
             "kernel floor | snn (default block) | snn, 4-step blocks | snn, 1-step blocks |",
             "|---|---|---|---|---|---|---|---|---|"]
    targets = ["| model | process | target | ms per run | ns per neuron-step as run | "
               "in cache |", "|---|---|---|---|---|---|"]
    for name in MODELS:
        for round_ in range(1, args.rounds + 1):
            r = run_child(ROOT, CHILD, (name, str(args.repeats)), {"NUMBA_NUM_THREADS": "1"})
            q = r["ratios"]
            products = f"{q['executor_products']:.2f}" if r["products"] else "n/a"
            table.append(f"| {name} | {round_} | {r['ann_ms']:.0f} | {q['executor']:.2f} | "
                         f"{products} | {q['kernel_floor']:.2f} | {q['snn']:.2f} "
                         f"({r['block']} steps) | {q['snn_4']:.2f} | {q['snn_1']:.2f} |")
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
        "kernel on data in cache; `snn`: the network as it runs, with its default block length "
        "and with blocks of 4 and of 1 step.\n\n" + "\n".join(table)
        + "\n\nThe neuron modules' populations one by one, in a separate run of the same "
        "process, by target: time per run of T=128, and nanoseconds per neuron-step as run "
        "(estimates, copies of strided inputs, calls and the kernel on data larger than the "
        "cache) and of the kernel alone on data in cache. Max-pool chains (the CNN) are not "
        "neuron modules and are left out.\n\n" + "\n".join(targets),
        f"python benchmarks/engine_floor.py --repeats {args.repeats} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
