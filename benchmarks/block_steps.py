"""Block length and malloc tuning: SNN(T=128) time and page faults per run on the digits models
(batch 64, one torch thread, one numba thread) for several block lengths, with the heap tuning of
``signgd_lab.conversion.heap`` on and off (``SIGNGD_LAB_MALLOC_TUNING``). Each setting runs in
its own child process, on and off alternating; every block length is timed in turn inside a
process. Writes benchmarks/RESULTS.md.

    python benchmarks/block_steps.py [--repeats 5] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("digits_cnn", "digits_mlp", "digits_attention")
BLOCKS = (8, 16, 32, 64, 128)

CHILD = r"""
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(1)
import signgd_lab as sl
name, dynamics = sys.argv[1], sys.argv[2]
repeats, blocks = int(sys.argv[3]), json.loads(sys.argv[4])
model, (x_tr, _), (x_te, _) = sl.zoo.load(name)
x = x_te[:64]
snn = sl.convert(model, x_tr[:256], dynamics=dynamics)
default = snn.block_steps(x.shape[1:], 64, 128)
times = {c: [] for c in ["default", *blocks]}
faults = {c: [] for c in times}

def timed(c):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    snn(x, [128], block_steps=None if c == "default" else c)
    times[c].append(time.perf_counter() - t)
    faults[c].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

with torch.no_grad():
    snn(x, [128])
    for _ in range(repeats):  # first as a user runs it: only the default block length
        timed("default")
    for i in range(repeats):  # then every length in turn, the order reversed every other time
        for c in blocks if i % 2 == 0 else blocks[::-1]:
            timed(c)
print(json.dumps({"package": sl.__file__, "default": default,
                  "ms": {c: 1e3 * statistics.median(v) for c, v in times.items()},
                  "faults": {c: statistics.median(v) for c, v in faults.items()}}))
"""


def child(name: str, dynamics: str, repeats: int, tuning: bool) -> dict:
    """One process measuring every block length of ``name``."""
    return run_child(ROOT, CHILD, (name, dynamics, str(repeats), json.dumps(BLOCKS)),
                     {"NUMBA_NUM_THREADS": "1",
                      "SIGNGD_LAB_MALLOC_TUNING": "1" if tuning else "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="processes per setting, in the order off, on, on, off, ...")
    parser.add_argument("--dynamics", default="paper")
    args = parser.parse_args()
    order = ([False, True, True, False] * args.rounds)[:2 * args.rounds]
    rows = []
    for name in MODELS:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for tuning in order:
            r = child(name, args.dynamics, args.repeats, tuning)
            runs[tuning].append(r)
            print(name, "tuning" if tuning else "default malloc", r, flush=True)
        for tuning in (False, True):
            keys = ["default", *map(str, BLOCKS)]
            best = {c: min(r["ms"][c] for r in runs[tuning]) for c in keys}
            faults = {c: min(r["faults"][c] for r in runs[tuning]) for c in keys}
            rows.append(f"| {name} | {'on' if tuning else 'off'} | {runs[tuning][0]['default']} | "
                        + " | ".join(f"{best[c]:.0f} ({faults[c]:.0f})" for c in keys) + " |")
    head = ("| model | malloc tuning | default block (steps) | default block, first | "
            + " | ".join(f"{c} steps" for c in BLOCKS) + " |\n|---|---|---|---|"
            + "---|" * len(BLOCKS))
    write_section(
        "Block length and malloc tuning", "SNN(T=128) run time in ms (median of "
        f"{args.repeats} runs in a process; the lower of {args.rounds} processes per setting) and, "
        "in brackets, minor page faults per run; batch 64, "
        f"{args.dynamics} dynamics, one torch and one numba thread. `default block, first`: "
        "the length `SpikingNetwork.block_steps` picks, timed before any other length ran in the "
        "process (as a user runs it); then every length in turn (a process that has freed "
        "larger blocks faults less: glibc raises its mmap threshold to the largest block freed)."
        "\n\n" + head + "\n" + "\n".join(rows),
        f"python benchmarks/block_steps.py --repeats {args.repeats} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
