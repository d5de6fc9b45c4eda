"""Population kernels, target by target: nanoseconds per neuron-step of
``kernels.population_steps`` on a (32 steps, 64 samples, 96 neurons) block, plain, counting
spikes, and rescaled (input shift and divisor, output scale, h(z) = g(s z) / s), one numba
thread, with the data in cache; and of ``kernels.product_steps`` (matmul product neurons) on
the attention model's shapes. Before and after a change, each in its own child process
(``--before DIR``: a worktree of the older commit). Writes benchmarks/RESULTS.md.

    python benchmarks/kernel_throughput.py --before /tmp/before
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child, write_before_after  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PRODUCT = "mul, matmul product neurons"
CHILD = r"""
import json, time, torch
torch.set_num_threads(1)
import signgd_lab
from signgd_lab.dynamics import kernels
T, B, S = 32, 64, 96
PRODUCT = %r
g = torch.Generator().manual_seed(0)
etas = 0.15 * 0.95 ** torch.arange(T, dtype=torch.float32)

def ns(fn, neuron_steps=T * B * S):
    fn()
    best = float("inf")
    for _ in range(15):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e9 / neuron_steps

out = {}
for name in kernels.EXACT_TARGETS + kernels.TRANSCENDENTAL_TARGETS:
    binary = name in ("max", "mul", "div", "rsqrt_div")
    cur = [torch.randn(T, B, S, generator=g)]
    off = [torch.randn(1, S, generator=g)]
    x = [torch.randn(B, S, generator=g)]
    if binary:
        cur.append(torch.rand(T, B, S, generator=g) + 1)
        off.append(torch.zeros(1, S))
        x.append(torch.rand(B, S, generator=g) + 1)
    v = torch.zeros(B, S)
    d = torch.rand(1, S, generator=g) + 0.5
    args = (name, 0.1, True, tuple(cur), tuple(off), tuple(x), v, etas)
    out[name] = [ns(lambda: kernels.population_steps(*args)),
                 ns(lambda: kernels.population_steps(*args, count=True)),
                 ns(lambda: kernels.population_steps(*args, scale=None if binary else d, shift=d,
                                                     divisor=d, out_scale=d))]
# product neurons of digits_attention's q k^T: 64 samples x 2 heads, 16 tokens, head dim 16
P, N, K, M, TP = 128, 16, 16, 16, 9  # TP: the attention model's default block length
v = torch.zeros(P, N, K, M)
a, b = torch.randn(TP, P, N, K, generator=g), torch.randn(TP, P, K, M, generator=g)
out[PRODUCT] = [ns(lambda: kernels.product_steps(v, a, b, etas[:TP], True), TP * v.numel()),
                None, None]
print(json.dumps({"package": signgd_lab.__file__, "ns": out}))
"""


def child(code: Path) -> dict:
    """ns per neuron-step of every target with the package at ``code``, in a fresh process."""
    return run_child(code, CHILD % PRODUCT, env={"NUMBA_NUM_THREADS": "1"})["ns"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per code version (before, after, after, before, ...); "
                             "the lowest time of each cell is kept")
    args = parser.parse_args()
    versions = {"after": ROOT} if not args.before else {"before": args.before.resolve(),
                                                        "after": ROOT}
    order = list(versions)
    order = (order + order[::-1]) * ((args.rounds + 1) // 2)
    best: dict[str, dict[str, list[float]]] = {label: {} for label in versions}
    for label in order[:args.rounds * len(versions)]:
        for name, times in child(versions[label]).items():
            kept = best[label].setdefault(name, times)
            best[label][name] = [None if a is None else min(a, b) for a, b in zip(kept, times)]
        print(label, "done", flush=True)
    rows = ["| target | code | plain | counting spikes | rescaled |", "|---|---|---|---|---|"]
    for name in best["after"]:
        for label in versions:
            cells = " | ".join("-" if t is None else f"{t:.2f}" for t in best[label][name])
            rows.append(f"| {name} | {label} | {cells} |")
    write_before_after(
        "Population kernels: ns per neuron-step", "kernel_throughput.py", args.before,
        "`kernels.population_steps` on a block of 32 steps x 64 samples x 96 neurons, one numba "
        "thread, data in cache; the fastest of 15 calls, the lower of "
        f"{args.rounds} processes per code version. exp-based targets use the vectorised exp, "
        "gelu_erf the vectorised float32 erf (code older than it calls the C library); "
        "gelu_tanh, tanh and softplus call the C library per neuron-step. "
        f"`{PRODUCT}`: `kernels.product_steps` on the shapes of digits_attention's q k^T "
        "(64 samples x 2 heads, N = K = M = 16), 9 steps (that model's block length); its "
        "spikes are always summed over K, and it has no rescaled form.",
        rows, f"--rounds {args.rounds}")


if __name__ == "__main__":
    main()
