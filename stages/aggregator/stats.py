"""Exact summary statistics of a timer, histogram or distribution interval."""

from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections.abc import Sequence


@functools.lru_cache(maxsize=64)
def percentile_key(pct: float) -> str:
    """``90`` → ``p90``, ``99.9`` → ``p99_9``."""
    text = repr(float(pct))
    if text.endswith(".0"):
        text = text[:-2]
    return f"p{text.replace('.', '_')}"


@functools.lru_cache(maxsize=1024)
def percentile_ranks(n: int, percentiles: tuple[float, ...]) -> tuple[tuple[str, int], ...]:
    """(key, index into the sorted values) of each percentile for ``n`` values, by nearest rank.

    Cached: a flush summarises thousands of timers, most with one of a few counts.
    """
    # Rounded first: 7 / 100 * 100 is 7.000000000000001 in floating point, whose ceil is 8.
    return tuple((percentile_key(pct), max(1, math.ceil(round(pct * n / 100, 9))) - 1) for pct in percentiles)


def summary(values: list[float], count: float, percentiles: list[float]) -> dict[str, float]:
    """count (sample-rate corrected), sum, min, max, mean, median, stddev and each ``pNN``.

    Percentiles use the nearest-rank method on the values received, so every reported value is
    one that was really sent; median is the middle value (mean of the two middle ones for an even
    count); stddev is the population standard deviation. Sorts ``values`` in place.
    """
    values.sort()
    n = len(values)
    try:
        total = math.fsum(values)
    except OverflowError:  # beyond the parsers' bound on values only after some 1e8 samples of 1e300
        total = math.inf if values[-1] > 0 else -math.inf
    mean = total / n
    middle = n // 2
    median = values[middle] if n % 2 else (values[middle - 1] + values[middle]) / 2
    # The distance from the point (mean, ..., mean) is the root of the summed squared deviations,
    # computed in C with extra precision and no list of deviations: a flush has thousands of timers.
    stddev = math.dist(values, [mean] * n) / math.sqrt(n)
    stats = timer_statistics(count, total, values[0], values[-1], mean, median, stddev)
    for key, index in percentile_ranks(n, tuple(percentiles)):
        stats[key] = values[index]
    return stats


def timer_statistics(count: float, total: float, low: float, high: float, mean: float, median: float,
                     stddev: float) -> dict[str, float]:
    """A timer's statistics beside its percentiles (``pNN``, :func:`percentile_key`), keyed as every
    sink sees them: the one list of their keys, for the edge's exact summary and the fleet tier's."""
    return {"count": count, "sum": total, "min": low, "max": high, "mean": mean, "median": median, "stddev": stddev}


def bucket_counts(values: list[float] | array[float], count: float, bounds: Sequence[float]) -> list[float]:
    """How many of the sorted ``values`` are at most each bound (Prometheus' ``le``), cumulative, and a
    last entry for ``+Inf``: ``count`` itself.

    Each value stands for ``count / len(values)`` metrics, as it does in a partial's sketch: the shard
    keeps a series' values and their sample-rate-corrected count, not each value's rate, so where
    every sample came at one rate (or none) each weighs exactly 1 / rate. A bucket never holds more
    than ``count``, so the counts only grow.
    """
    n = len(values)
    weight = count / n
    out = []
    for bound in bounds:
        below = bisect.bisect_right(values, bound)
        out.append(count if below == n else min(below * weight, count))
    out.append(count)
    return out
