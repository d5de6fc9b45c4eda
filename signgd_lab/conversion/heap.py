"""Keep freed memory in the process while networks run (Linux, glibc).

A simulation block allocates tensors of a few megabytes (currents, spikes, estimates for c*B
rows) and frees them before the next block allocates the same sizes again. glibc's malloc hands
such blocks back to the kernel (``munmap``, or trimming the top of the heap) and the next block
page-faults every 4 KiB back in: about 15,000 faults and a quarter of a digits_cnn run in
system time on the development machine (``benchmarks/engine.py``). :func:`retain_freed_memory`
sets glibc's thresholds once per process so that blocks below 32 MiB come from the heap and the
heap is trimmed only above 512 MiB of free memory at its top: freed buffers are reused without
faults, and the process keeps up to that much freed memory (its resident size stays near its
peak).

It applies to the whole process and stays in force. Set ``SIGNGD_LAB_MALLOC_TUNING=0`` to leave
malloc alone; it is also left alone where the user set ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` or where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: allocations below it come from the heap
TRIM_THRESHOLD = 512 * 2**20  # free memory at the heap's top beyond this goes back to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_state: dict[str, bool] = {}


def malloc_tuning_wanted() -> bool:
    """Whether :func:`retain_freed_memory` may tune malloc in this process: Linux with glibc,
    not switched off by ``SIGNGD_LAB_MALLOC_TUNING=0``, thresholds not set by the user."""
    if os.environ.get("SIGNGD_LAB_MALLOC_TUNING", "1") in ("0", "false", "no"):
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring) the first time it is
    called in a process; returns whether they are set."""
    if "tuned" not in _state:
        tuned = False
        if malloc_tuning_wanted():
            tuned = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and \
                _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _state["tuned"] = tuned
    return _state["tuned"]


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; True when it accepted the setting."""
    return bool(ctypes.CDLL(None).mallopt(param, value))
