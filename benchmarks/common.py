"""Shared helpers of the benchmark scripts: timing and RESULTS.md sections."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = RESULTS.parent.parent  # the checkout the benchmarks belong to


def machine() -> str:
    """One line describing where a benchmark ran."""
    cpu = platform.processor() or platform.machine()
    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, python {platform.python_version()}")


def run_child(code: Path, script: str, args: tuple[str, ...] = (), env: dict | None = None,
              cwd: Path | str | None = None, timeout: float | None = None) -> dict:
    """Run ``python -c script *args`` in a fresh interpreter that imports signgd_lab from the
    checkout ``code`` (extra ``env`` variables set; working directory ``cwd``, default ``code``)
    and return the JSON object its last line prints. The child must report
    ``signgd_lab.__file__`` as ``"package"``: a child that imported another copy is refused."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(code), **(env or {})),
                         cwd=code if cwd is None else cwd, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"the child process failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["package"].startswith(str(code)):
        raise RuntimeError(f"the child imported {result['package']}, not the package in {code}")
    return result


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mb(fn: Callable[[], object]) -> float:
    """Extra peak resident memory (MB) of ``fn()`` over the memory in use before it (Linux:
    the peak counter VmHWM is reset through /proc/self/clear_refs)."""
    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
        raise RuntimeError(f"{key} not in /proc/self/status")

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS:")
    fn()
    return (status("VmHWM:") - base) / 1024


def write_section(name: str, body: str, command: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md, stamped with date and machine."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    stamp = (f"<!-- {name}:begin -->\n## {name}\n\n- date: {dt.date.today().isoformat()}\n"
             f"- machine: {machine()}\n- command: `{command}`\n\n{body.strip()}\n<!-- {name}:end -->")
    pattern = re.compile(rf"<!-- {re.escape(name)}:begin -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: stamp, text) if pattern.search(text) else text.rstrip() + "\n\n" + stamp + "\n"
    RESULTS.write_text(text)


def write_before_after(name: str, script: str, before: Path | None, text: str,
                       table: list[str], options: str = "") -> None:
    """Write section ``name``: ``text``, then the markdown ``table`` (its lines), stamped with
    the command ``python benchmarks/<script> [--before DIR] <options>``."""
    command = f"python benchmarks/{script}" + (f" --before {before}" if before else "") + \
        (f" {options}" if options else "")
    write_section(name, code_measured(before) + "\n\n" + text.strip() + "\n\n"
                  + "\n".join(table), command)


def code_measured(before: Path | None) -> str:
    """The line that names the commits a section measured: this checkout, and the older
    checkout compared with (if any)."""
    return f"Code measured: after: {commit(ROOT)}" + \
        (f"; before: {commit(before)}" if before else "") + "."


def commit(checkout: Path) -> str:
    """The commit a checkout is at (short hash), marked when its package (the code measured)
    differs from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                                  text=True).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    return head + (" with uncommitted changes to signgd_lab" if git(
        "status", "--porcelain", "--", "signgd_lab") else "")
