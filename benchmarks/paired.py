"""Two versions of the package in one process, run alternately: the A/B comparison that holds on
a shared machine whose speed drifts between processes. The older checkout's package is copied
under another name (``signgd_lab_before``: the package imports itself relatively), both convert
the same zoo model, and each repeat times one T=128 run of each, in alternating order, in CPU
time of this process (one torch and one numba thread). Shown: the medians and the median of the
per-repeat ratios after / before, and whether both give the same outputs. Writes
benchmarks/RESULTS.md.

    git worktree add /tmp/start <commit>
    python benchmarks/paired.py --before /tmp/start [--batch 64] [--block-steps N] [--print-only]
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, code_measured, commit, write_section  # noqa: E402

sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import signgd_lab  # noqa: E402

MODELS = ("digits_cnn", "digits_mlp", "digits_attention")


def load_before(checkout: Path):
    """The package of ``checkout`` imported as ``signgd_lab_before`` from a copy. The copy of a
    committed checkout is kept (in the temporary directory, one per commit), so numba's disk
    cache next to it serves later runs; a checkout with uncommitted changes is copied afresh."""
    version = commit(checkout)
    scratch = Path(tempfile.gettempdir()) / "signgd_lab_paired" / version.split()[0]
    if " " in version or not (scratch / "signgd_lab_before").is_dir():
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(checkout / "signgd_lab", scratch / "signgd_lab_before",
                        ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(scratch))
    return importlib.import_module("signgd_lab_before")


def compare(before, name: str, dynamics: str, batch: int, block_steps: int | None,
            repeats: int) -> dict:
    """Medians of the two versions' T=128 runs on one model, alternating, and their ratio."""
    model, (x_tr, _), (x_te, _) = signgd_lab.zoo.load(name)
    x = x_te[:batch]
    nets = {"before": before.convert(model, x_tr[:256], dynamics=dynamics),
            "after": signgd_lab.convert(model, x_tr[:256], dynamics=dynamics)}
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.no_grad():
        outs = {k: net(x, [128], block_steps=block_steps) for k, net in nets.items()}
        for i in range(repeats):
            for k in (("before", "after") if i % 2 == 0 else ("after", "before")):
                start = time.process_time()
                nets[k](x, [128], block_steps=block_steps)
                times[k].append(time.process_time() - start)
    ratios = [a / b for a, b in zip(times["after"], times["before"])]
    return {"before": statistics.median(times["before"]), "after": statistics.median(times["after"]),
            "ratio": statistics.median(ratios), "equal": torch.equal(outs["before"], outs["after"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the older code")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--dynamics", nargs="+", default=["paper", "extended"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--block-steps", type=int, default=None,
                        help="steps per block (default: the network's choice)")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--print-only", action="store_true",
                        help="print the table and leave benchmarks/RESULTS.md as it is")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load_before(args.before.resolve())
    rows = ["| model | dynamics | before (ms) | after (ms) | after / before (paired) | "
            "same outputs |", "|---|---|---|---|---|---|"]
    for dynamics in args.dynamics:
        for name in args.models:
            r = compare(before, name, dynamics, args.batch, args.block_steps, args.repeats)
            print(name, dynamics, {k: round(v, 4) for k, v in r.items()}, flush=True)
            rows.append(f"| {name} | {dynamics} | {r['before'] * 1e3:.1f} | "
                        f"{r['after'] * 1e3:.1f} | {r['ratio']:.3f} | "
                        f"{'yes' if r['equal'] else 'no'} |")
    if args.print_only:
        print("\n".join(rows))
        return
    block = "the network's block length" if args.block_steps is None else \
        f"blocks of {args.block_steps} step{'s' * (args.block_steps > 1)}"
    options = f"--batch {args.batch}" + (f" --block-steps {args.block_steps}"
                                        if args.block_steps else "")
    write_section(
        f"Paired A/B in one process (batch {args.batch}, {block})",
        code_measured(args.before) + "\n\n"
        f"SNN(T=128) run of each version, batch {args.batch}, {block}, one torch and one numba "
        f"thread, CPU time of the process, median of {args.repeats} repeats that alternate "
        "the order; the ratio is the median of the per-repeat ratios.\n\n" + "\n".join(rows),
        f"python benchmarks/paired.py --before {args.before} {options}")


if __name__ == "__main__":
    main()
