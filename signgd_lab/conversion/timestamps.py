"""Time-steps of a run: the timestamps users ask for and the blocks a run is cut into."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import ConversionError


def check_timestamps(timestamps: int | Sequence[int]) -> list[int]:
    """Validate timestamps: positive integers in strictly increasing order."""
    ts = [timestamps] if isinstance(timestamps, int) else list(timestamps)
    if not ts:
        raise ConversionError("timestamps is empty; pass e.g. timestamps=[8, 64]")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, int) and not (
                isinstance(t, float) and float(t).is_integer()):
            raise ConversionError(f"timestamps must be integers, got {t!r}")
        if t <= 0:
            raise ConversionError(f"timestamps must be >= 1, got {t!r}")
    ts = [int(t) for t in ts]
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ConversionError(f"timestamps must be strictly increasing, got {ts}; "
                              f"sort them, e.g. {sorted(set(ts))}")
    return ts


def block_bounds(total: int, stops: Iterable[int], block_steps: int) -> list[tuple[int, int]]:
    """(start, end) step ranges covering 0..total: every step in ``stops`` (at most ``total``)
    ends a block, so what was asked for at that step can be read from the state there, and no
    block is longer than ``block_steps``."""
    ends = sorted({s for s in stops if 0 < s <= total} | {total})
    bounds, start = [], 0
    for end in ends:
        while start < end:
            stop = min(end, start + block_steps)
            bounds.append((start, stop))
            start = stop
    return bounds
