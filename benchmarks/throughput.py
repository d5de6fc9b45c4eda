"""Evaluation throughput (images per second at T=64) with 1 and 2 CPU processes, side by side.

Each configuration is one ``torchrun --standalone --nproc-per-node N -m signgd_lab.cli evaluate``
run on the digits test set, with one torch thread per process (OMP_NUM_THREADS=1), so N
processes use N cores. images/s is what ``evaluate`` reports: images over the slowest rank's
time in the batch loop (conversion, kernel compilation and imports excluded; they are listed
separately). The counts of every configuration must be identical: the script checks that.

    python benchmarks/throughput.py [--model digits_cnn] [--limit 256] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_section

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, args: argparse.Namespace, out: Path) -> dict:
    """One torchrun evaluation; returns results.json plus the wall time of the whole command."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(processes), "-m", "signgd_lab.cli", "evaluate", "--model", args.model,
           "--data", "digits", "--dynamics", args.dynamics, "--timestamps", "64",
           "--batch-size", str(args.batch_size), "--limit", str(args.limit), "--no-progress",
           "--restart", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    result = json.loads((out / "results.json").read_text())
    result["wall_seconds"] = wall
    return result


def main() -> None:
    """Run 1 and 2 processes on the same evaluation and record the table in RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--dynamics", default="paper", choices=["paper", "extended", "if"])
    parser.add_argument("--limit", type=int, default=256, help="digits test images evaluated")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            results[n] = run(n, args, Path(tmp) / f"p{n}")
            r = results[n]
            print(f"{n} process(es): {r['images_per_second']:.1f} images/s "
                  f"(batch loop {r['eval_seconds']:.1f} s, conversion + warm-up "
                  f"{r['convert_seconds']:.1f} s, whole command {r['wall_seconds']:.1f} s)",
                  flush=True)
    one, two = results[1], results[2]
    same = (one["snn_correct"], one["ann_correct"]) == (two["snn_correct"], two["ann_correct"])
    if not same:
        raise SystemExit(f"1 and 2 processes counted differently: {one['snn_correct']} vs "
                         f"{two['snn_correct']}")
    rows = "\n".join(
        f"| {n} | {r['images_per_second']:.1f} | {r['eval_seconds']:.1f} | "
        f"{r['convert_seconds']:.1f} | {r['wall_seconds']:.1f} | {r['snn_top1']['64']:.3f} |"
        for n, r in results.items())
    body = (f"{args.model} ({args.dynamics}), {one['samples']} digits test images, T = 64, batch "
            f"{args.batch_size}, one torch thread per process, `torchrun --standalone`.\n\n"
            "| processes | images/s | batch loop (s) | conversion + warm-up (s) | whole command (s) "
            "| SNN top-1 |\n|---|---|---|---|---|---|\n" + rows + "\n\n"
            f"2 processes / 1 process: **{two['images_per_second'] / one['images_per_second']:.2f}x"
            "** images/s; identical correct counts (checked). Each process also pays its imports "
            "and its own conversion and kernel compilation (the last two columns).")
    print(body)
    if not args.no_write:
        write_section("Evaluation throughput (torchrun, CPU)", body,
                      f"python benchmarks/throughput.py --model {args.model} --limit {args.limit}")


if __name__ == "__main__":
    main()
