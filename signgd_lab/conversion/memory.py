"""The memory guard: a run whose neuron state would not fit is refused before it starts."""
from __future__ import annotations

import torch

from .errors import ConversionError


def available_memory(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes (None when it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_memory(needed: int, device: torch.device) -> None:
    """Raise :class:`ConversionError` when ``needed`` bytes exceed what ``device`` has free."""
    available = available_memory(device)
    if available is not None and needed > available:
        raise ConversionError(
            f"this run needs about {needed / 2**30:.2f} GiB for neuron state and buffers but "
            f"only {available / 2**30:.2f} GiB are available on {device}; pass "
            "batch_chunk=... (same outputs, less memory), a smaller block_steps (or "
            "mode='stepwise'), or allow_large=True")
