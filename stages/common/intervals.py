"""Intervals of the wall clock: which one a moment falls in, where one starts, the next edge.

Every stage cuts time at the same edges, the multiples of ``flush_interval`` since the epoch: the
receivers close a batch window at an edge, the shards and the fleet tier put a metric in the
interval of its moment, the forwarder and the receivers report at an edge, a reshard switches rings
at one. An interval's start is published rounded to the microsecond (flushes and partials carry it
so); the interval of a moment is the one whose published start it has reached, so that a published
start maps back to its own interval whatever the float division gives: 1700000000.3 / 0.1 is
17000000002.999998, whose floor is the interval before.
"""

from __future__ import annotations

import math


def interval_start(index: int, interval: float) -> float:
    """When interval ``index`` starts (unix time), as flushes and partials carry it."""
    return round(index * interval, 6)


def interval_index(ts: float, interval: float) -> int:
    """The interval ``ts`` (unix time) falls in: the last whose start it has reached."""
    index = math.floor(ts / interval)
    # The division can land a float's width either side of a whole quotient: the starts decide.
    if ts >= interval_start(index + 1, interval):
        return index + 1
    if ts < interval_start(index, interval):
        return index - 1
    return index


def next_edge(now: float, interval: float) -> float:
    """The start of the interval after the one ``now`` falls in (at an edge: the edge after it)."""
    return interval_start(interval_index(now, interval) + 1, interval)
