"""The simulation engine before and after a change, side by side in one run: SNN(T=128) time over
128 ANN forwards (batch 64, one torch thread; one numba thread, or ``--numba-threads N``) on the digits models,
and what the probes cost against a plain run of the same T. Each code version runs in its own child process
(``--before DIR``: a worktree of the older commit), the two alternating, medians of the repeats.
Writes benchmarks/RESULTS.md.

    git worktree add /tmp/before <commit>
    python benchmarks/engine.py --before /tmp/before [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child, write_before_after  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("digits_cnn", "digits_mlp", "digits_attention")
PROBE_TS = [10, 35, 128]  # no common divisor: probes that need a block end at each T
PROBES = ("spike_stats", "spike_stats_over_T", "layer_errors")

CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
import signgd_lab as sl
from signgd_lab import probes
name, dynamics, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
ts = json.loads(sys.argv[4])
model, (x_tr, _), (x_te, _) = sl.zoo.load(name)
x = x_te[:64]
snn = sl.convert(model, x_tr[:256], dynamics=dynamics)

def timed(fn, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps

runs = {
    "ann": lambda: model(x),
    "plain": lambda: snn(x, [128]),
    "plain_ts": lambda: snn(x, ts),
    "spike_stats": lambda: probes.spike_stats(snn, x, 128),
    "spike_stats_over_T": lambda: probes.spike_stats_over_T(snn, x, ts),
    "layer_errors": lambda: probes.layer_errors(model, snn, x, ts),
}
times = {k: [] for k in runs}
ratios = []  # each plain run over the ANN forwards timed right before and after it
with torch.no_grad():
    for fn in runs.values():  # warm-up: kernel compilation or cache loading
        fn()
    for _ in range(repeats):
        for key, fn in runs.items():
            times[key].append(timed(fn, 20 if key == "ann" else 1))
        ann_after = timed(runs["ann"], 20)
        ratios.append(times["plain"][-1] / (64 * (times["ann"][-1] + ann_after)))
med = {k: statistics.median(v) for k, v in times.items()}
print(json.dumps({"package": sl.__file__, "ratio": statistics.median(ratios),
                  "plain_s": med["plain"],
                  "spike_stats": med["spike_stats"] / med["plain"],
                  "spike_stats_over_T": med["spike_stats_over_T"] / med["plain_ts"],
                  "layer_errors": med["layer_errors"] / med["plain_ts"]}))
"""


def child(code: Path, name: str, dynamics: str, repeats: int, numba_threads: int) -> dict:
    """Run the measurements of one model with the package at ``code`` in a fresh process."""
    return run_child(code, CHILD, (name, dynamics, str(repeats), json.dumps(PROBE_TS)),
                     {"NUMBA_NUM_THREADS": str(numba_threads)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per code version, in the order before, after, after, "
                             "before, ...; every one's ratio is reported")
    parser.add_argument("--dynamics", nargs="+", default=["paper", "extended"])
    parser.add_argument("--numba-threads", type=int, default=1,
                        help="threads of the numba kernels (torch always runs one)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the children run (the section's header names this process's)
    versions = {"after": ROOT}
    if args.before:
        versions = {"before": args.before.resolve(), "after": ROOT}
    rows = []
    order = list(versions)
    order = (order + order[::-1]) * ((args.rounds + 1) // 2)  # before, after, after, before, ...
    for dynamics in args.dynamics:
        for name in MODELS:
            results: dict[str, list[dict]] = {label: [] for label in versions}
            for label in order[:args.rounds * len(versions)]:
                r = child(versions[label], name, dynamics, args.repeats, args.numba_threads)
                results[label].append(r)
                print(name, dynamics, label, {k: round(v, 3) for k, v in r.items()
                                              if isinstance(v, float)}, flush=True)
            for label, runs in results.items():
                rows.append((name, dynamics, label, runs))
    ratio = ["| model | dynamics | code | SNN(T=128) / 128 ANN, each process | SNN run (ms), "
             "least disturbed process |", "|---|---|---|---|---|"]
    probe = ["| model | dynamics | code | spike_stats(T=128) | spike_stats_over_T | "
             "layer_errors |", "|---|---|---|---|---|---|"]
    for name, dynamics, label, runs in rows:
        least = min(runs, key=lambda r: r["ratio"])
        each = " / ".join(f"{r['ratio']:.2f}" for r in runs)
        ratio.append(f"| {name} | {dynamics} | {label} | {each} | "
                     f"{least['plain_s'] * 1e3:.0f} |")
        worst = {k: max(r[k] for r in runs) for k in PROBES}
        probe.append(f"| {name} | {dynamics} | {label} | {worst['spike_stats']:.2f} | "
                     f"{worst['spike_stats_over_T']:.2f} | {worst['layer_errors']:.2f} |")
    threads = "one numba thread" if args.numba_threads == 1 else \
        f"{args.numba_threads} numba threads (the kernels' default on this machine)"
    write_before_after(
        f"Simulation engine: before and after ({threads.split(' (')[0]})", "engine.py",
        args.before,
        f"Batch 64, one torch thread and {threads}, median of {args.repeats} repeats in each "
        f"process; {args.rounds} processes per code version in the order before, after, after, "
        "before. The ratio of a repeat is its SNN run over the mean of 20 ANN forwards timed "
        "just before and 20 just after it (the machine's speed drifts within a process); the "
        "median of these ratios is shown for every process, in the order they ran. `before` is "
        "the worktree named in the command."
        "\n\nSimulation time over ANN time:\n\n" + "\n".join(ratio)
        + "\n\nProbe cost, as a multiple of a plain run of the same steps (T=128 for "
        f"spike_stats; T={PROBE_TS} for spike_stats_over_T and layer_errors, against a plain "
        "run with those timestamps), the highest of the processes:", probe,
        f"--numba-threads {args.numba_threads} --dynamics {' '.join(args.dynamics)}")


if __name__ == "__main__":
    main()
