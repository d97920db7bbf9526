"""Exact summary statistics of a timer, histogram or distribution interval."""

from __future__ import annotations

import functools
import math
from itertools import repeat
from operator import mul, sub


@functools.lru_cache(maxsize=64)
def percentile_key(pct: float) -> str:
    """``90`` → ``p90``, ``99.9`` → ``p99_9``."""
    text = repr(float(pct))
    if text.endswith(".0"):
        text = text[:-2]
    return f"p{text.replace('.', '_')}"


def summary(values: list[float], count: float, percentiles: list[float]) -> dict[str, float]:
    """count (sample-rate corrected), sum, min, max, mean, median, stddev and each ``pNN``.

    Percentiles use the nearest-rank method on the values received, so every reported value is
    one that was really sent; median is the middle value (mean of the two middle ones for an even
    count); stddev is the population standard deviation.
    """
    ordered = sorted(values)
    n = len(ordered)
    total = math.fsum(ordered)
    mean = total / n
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    # Deviations and their squares in C (map), not a generator: a flush summarises thousands of timers.
    deviations = list(map(sub, ordered, repeat(mean, n)))
    variance = math.fsum(map(mul, deviations, deviations)) / n
    stats = {
        "count": count,
        "sum": total,
        "min": ordered[0],
        "max": ordered[-1],
        "mean": mean,
        "median": median,
        "stddev": math.sqrt(variance),
    }
    for pct in percentiles:
        # Rounded first: 7 / 100 * 100 is 7.000000000000001 in floating point, whose ceil is 8.
        rank = max(1, math.ceil(round(pct * n / 100, 9)))
        stats[percentile_key(pct)] = ordered[rank - 1]
    return stats
