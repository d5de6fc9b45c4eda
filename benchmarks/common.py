"""Shared helpers of the benchmark scripts: timing and RESULTS.md sections."""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """One line describing where a benchmark ran."""
    cpu = platform.processor() or platform.machine()
    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, python {platform.python_version()}")


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
    write_section(name, text.strip() + "\n\n" + "\n".join(table), command)
