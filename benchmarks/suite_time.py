"""Wall time of the test suite as `make test` runs it, for this checkout and (``--before DIR``) a
worktree of an older commit, one after the other in the same run, each with the kernel cache
already written (a second run on the machine). Writes benchmarks/RESULTS.md.

    git worktree add /tmp/before <commit>
    python benchmarks/suite_time.py --before /tmp/before
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_before_after  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_suite(tree: Path, args: list[str]) -> tuple[float, str]:
    """(wall seconds, pytest's summary line) of the suite of ``tree`` with ``args``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                         cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    summary = next((line for line in reversed(out.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed)", line)), out.stdout[-300:])
    return wall, summary.strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a worktree of the commit to compare with")
    parser.add_argument("--before-args", default="-q", help="pytest arguments of the old suite")
    parser.add_argument("--after-args", default="-q -n 2 --dist loadfile",
                        help="pytest arguments of this suite (the Makefile's)")
    args = parser.parse_args()
    runs = [("after", ROOT, args.after_args)]
    if args.before:
        runs.insert(0, ("before", args.before.resolve(), args.before_args))
    rows = ["| code | command | wall | result |", "|---|---|---|---|"]
    for label, tree, pytest_args in runs:
        wall, summary = run_suite(tree, shlex.split(pytest_args))
        print(label, f"{wall:.0f} s", summary, flush=True)
        rows.append(f"| {label} | `pytest {pytest_args}` | {wall / 60:.1f} min ({wall:.0f} s) | "
                    f"{summary} |")
    write_before_after(
        "Test suite time", "suite_time.py", args.before,
        "The suite as `make test` runs it (slow tests excluded by pytest's addopts), numba kernels "
        "already in the on-disk cache, the runs one after the other on the 2-core machine. "
        "*before*: as the Makefile ran it then (its command is shown); *after*: `-n 2 --dist "
        "loadfile` (pytest-xdist, whole files per worker, one numba thread per worker), the "
        "Makefile's command now.", rows)

if __name__ == "__main__":
    main()
