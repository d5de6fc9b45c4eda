"""Time to first result in a fresh process: import signgd_lab, load the zoo's digits_mlp, convert
it (extended dynamics) and run T=64 on 16 images; the first-ever run (empty numba cache) and the
second run (the cache the first one wrote), each in its own fresh interpreter. Counts numba
compilations in each process. Writes benchmarks/RESULTS.md.

    python benchmarks/cold_start.py                       # this checkout
    python benchmarks/cold_start.py --before /tmp/before  # and a worktree of another commit
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_child, write_before_after  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import time
t0 = time.perf_counter()
from numba.core import event
compiles = []
class Count(event.Listener):
    def on_start(self, ev):
        compiles.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
import json, torch
torch.set_num_threads(1)
import signgd_lab as sl
t1 = time.perf_counter()
model, (x_tr, _), (x_te, _) = sl.zoo.load("digits_mlp")
t2 = time.perf_counter()
snn = sl.convert(model, x_tr[:256], dynamics="extended")
t3 = time.perf_counter()
with torch.no_grad():
    snn(x_te[:16], timestamps=[64])
t4 = time.perf_counter()
print(json.dumps({"package": sl.__file__, "import_s": t1 - t0, "zoo_s": t2 - t1,
                  "convert_s": t3 - t2, "run_s": t4 - t3, "compiles": len(compiles)}))
"""


def fresh_process(repo: Path, cache: str) -> dict:
    """Run the script once in a new interpreter importing signgd_lab from ``repo``, with numba's
    cache in ``cache``; its phase times, its wall time (interpreter start included) and the
    number of numba compilations."""
    t0 = time.perf_counter()
    result = run_child(repo, CHILD, env={"NUMBA_CACHE_DIR": cache}, cwd=tempfile.gettempdir(),
                       timeout=900)
    wall = time.perf_counter() - t0
    return {**result, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, default=None,
                        help="a git worktree of the commit to compare with (measured first)")
    args = parser.parse_args()
    trees = ([("before", args.before.resolve())] if args.before else []) + [("after", ROOT)]
    rows = []
    for label, repo in trees:
        with tempfile.TemporaryDirectory() as cache:
            for run in ("first-ever", "second"):
                r = fresh_process(repo, cache)
                print(label, run, json.dumps(r), flush=True)
                rows.append((label, run, r))
    lines = ["| code | process | first result (s) | wall (s) | import | zoo | convert | "
             "first run T=64 | numba compiles |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, run, r in rows:
        first = r["import_s"] + r["zoo_s"] + r["convert_s"] + r["run_s"]
        lines.append(f"| {label} | {run} | {first:.1f} | {r['wall_s']:.1f} | {r['import_s']:.1f} | "
                     f"{r['zoo_s']:.1f} | {r['convert_s']:.2f} | {r['run_s']:.2f} | "
                     f"{r['compiles']} |")
    write_before_after(
        "Cold start", "cold_start.py", args.before,
        "Fresh interpreter: import signgd_lab, zoo digits_mlp, convert (extended), run T=64 on 16 "
        "images, one torch thread. *first result*: from the script's first line to the run's "
        "output (import + zoo + convert + run). *first-ever*: empty numba cache (a new "
        "NUMBA_CACHE_DIR); *second*: a new process on the cache the first wrote. Wall time "
        "includes interpreter start. *before*: the worktree given with --before (named in the "
        "command); *after*: this checkout. The 2 cores are shared with other jobs, so times vary "
        "by tenths of a second between processes.", lines)

if __name__ == "__main__":
    main()
