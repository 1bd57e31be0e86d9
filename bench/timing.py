"""Small timing helpers shared by the cost figures."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence


def summary_ms(seconds: Sequence[float]) -> dict[str, float | int]:
    """Median, 10th/90th percentile and max of durations, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        raise ValueError("no durations to summarize")

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] * 1e3

    return {"median_ms": statistics.median(ordered) * 1e3, "p10_ms": pct(0.1),
            "p90_ms": pct(0.9), "max_ms": ordered[-1] * 1e3, "n": len(ordered)}


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1,
               sync: Callable[[], None] | None = None) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        out.append(time.perf_counter() - start)
    return out
