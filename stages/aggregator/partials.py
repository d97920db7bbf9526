"""An edge shard's closed interval as mergeable partials: one ``pystatsd.partial.v1`` per series.

What the kafka sink's ``format: partials`` sends, and the fleet tier (:mod:`stages.aggregator.fleet.bucket`)
merges. Each partial is the series' entry of the closed bucket as a one-entry batch v2 body, so the
same sums, gauge values, timer values and set members that a receiver sends a shard go on to the
fleet; past :class:`PartialBounds` a timer's values are replaced by their exact count, sum, min, max
and sum of squares plus a DDSketch, and a set's members by a HyperLogLog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stages.aggregator.series import IntervalBucket, SeriesKey
from stages.common.contract import BatchBody, PartialHeader, encode_partial, unpack_values
from stages.common.intervals import interval_start
from stages.common.partial_bounds import PartialBounds


@dataclass(frozen=True)
class PartialSource:
    """Who an edge shard's partials say sent them, and how much they carry exactly."""

    host: str
    #: ``shard@epoch`` of the shard's flush stream
    src: str
    bounds: PartialBounds


def partial_key(key: SeriesKey) -> bytes:
    """The Kafka key: the series, so that every host's partials of it land in one partition."""
    return key.encode("utf-8", "surrogatepass")


def partial_records(bucket: IntervalBucket, gauges: dict[SeriesKey, list[Any]], start: float, interval: float,
                    source: PartialSource) -> list[bytes]:
    """Kafka key, value, key, value, ... for every series of the closed ``bucket`` and every live gauge
    (``gauges``: key → [value, index of the interval that last changed it])."""
    # Here, not at the top: the sketches' libraries (numpy among them) take some 20 MiB, which a shard that
    # makes no partials (every shard but an edge's) never needs.
    from stages.aggregator.sketch import hll_bytes, hll_of, sketch_bytes, sketch_of

    out: list[bytes] = []
    host, src, bounds = source.host, source.src, source.bounds
    plain = PartialHeader(host, src, start, interval)

    def emit(key: SeriesKey, body: BatchBody, header: PartialHeader = plain) -> None:
        out.append(partial_key(key))
        out.append(encode_partial(header, body))

    for key, total in bucket.counters.items():
        emit(key, BatchBody([key, total], [], [], [], []))
    for key, total in bucket.traces.items():
        emit(key, BatchBody([], [], [], [], [key, total]))
    for key, (value, seen) in gauges.items():
        emit(key, BatchBody([], [key, True, value], [], [], []),
             PartialHeader(host, src, start, interval, seen=interval_start(seen + 1, interval)))
    for mtype, of_type in bucket.sampled.items():
        for key, (packed, count) in of_type.items():
            data = b"".join(packed)
            if len(data) // 8 <= bounds.partial_max_values:
                emit(key, BatchBody([], [], [key, mtype, count, data], [], []))
                continue
            values = unpack_values(data)
            n = len(values)
            stats = [float(n), math.fsum(values), min(values), max(values), math.fsum(v * v for v in values)]
            sketch = sketch_bytes(sketch_of(values, count / n))
            emit(key, BatchBody([], [], [key, mtype, count, b""], [], []),
                 PartialHeader(host, src, start, interval, stats=stats, sketch=sketch))
    for key, members in bucket.sets.items():
        if len(members) <= bounds.partial_max_members:
            emit(key, BatchBody([], [], [], [key, sorted(members)], []))
        else:
            emit(key, BatchBody([], [], [], [key, []], []),
                 PartialHeader(host, src, start, interval, hll=hll_bytes(hll_of(members))))
    return out
