"""One interval of the fleet: the partials of every host merged per series, and their aggregates. Pure.

A series is the name and tags the edge emitted; the host that sent a partial only names it (with
the edge shard's flush stream and the series), so a partial that comes twice (an edge that re-sent a
flush) is counted once and counted as a duplicate. What is exact and what is not:

- counters and traces: the sum of every host's sums, exact;
- gauges: the value of the host whose value changed last (the end of the interval it changed in;
  equal times go to the host name that sorts last, so every fleet process picks the same one);
- timers, histograms, distributions: count, sum, min, max and mean exact always; while no host
  sent more values than its bound, the percentiles, median and stddev are computed over all hosts'
  values exactly as an edge computes them; past it, from the merged DDSketch (each within 1 % of
  the value at its rank) and stddev from the exact sums of squares;
- sets: the exact union of members while no host sent a HyperLogLog; past it, the union's estimate;
- a timer-like's ``buckets`` (where ``histogram_buckets`` gives its name bounds): each host's values
  counted exactly as an edge counts them (each weighing its own partial's count / values), and past
  the bound its sketch's bins, the bin that holds a bound counted in it whole
  (:func:`stages.aggregator.sketch.at_most`: a value up to 2 % beyond a bound may be counted in it).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from stages.aggregator.histogram_bounds import BucketBounds
from stages.aggregator.sketch import (
    at_most,
    hll_from_bytes,
    hll_of,
    hll_union_of,
    new_sketch,
    quantile,
    sketch_from_bytes,
    sketch_of,
)
from stages.aggregator.stats import bucket_counts, percentile_key, summary, timer_statistics
from stages.common.contract import BODY_STRIDES, BatchBody, PartialHeader, unpack_values
from stages.common.model import KEY_SEPARATOR, OUTPUT_TYPE_NAMES, IntervalAggregates, series_name

#: The tag every fleet aggregate carries beside its own, so that it is never taken for one host's.
FLEET_TAG = ("pystatsd_scope", "fleet")
_FLEET_SUFFIX = KEY_SEPARATOR + KEY_SEPARATOR.join(FLEET_TAG)


class FleetBucket:
    """Every partial of one interval (of the partitions one fleet process owns)."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.traces: dict[str, float] = {}
        #: key → [seen, host, value]
        self.gauges: dict[str, list[Any]] = {}
        #: key → [type, count, [packed exact values...], [stats of the partials past the bound], [sketches]]
        self.sampled: dict[str, list[Any]] = {}
        #: key → [members, [HLL sketches]]
        self.sets: dict[str, list[Any]] = {}
        #: (host, src, key, section) of every partial merged: a second one is a duplicate
        self.merged: set[int] = set()
        #: host → partials merged
        self.hosts: Counter[str] = Counter()
        self.duplicates = 0
        #: series changed since :meth:`take_touched` (what a correction re-sends)
        self.touched: set[str] = set()

    def __len__(self) -> int:
        return len(self.merged)

    def merge(self, header: PartialHeader, body: BatchBody) -> bool:
        """Add one partial; False (and counted) when this one was merged before. ValueError when its
        body or sketch is not what a partial holds."""
        counters, gauges, sampled, sets, traces = body
        section = next((i for i, part in enumerate(body) if part), -1)
        if section < 0 or sum(len(part) for part in body) != BODY_STRIDES[section]:
            raise ValueError("a partial holds one entry")
        key = body[section][0]
        if not isinstance(key, str):
            raise ValueError("a partial's key is not a string")
        name = hash((header.host, header.src, key, section))
        if name in self.merged:
            self.duplicates += 1
            return False
        if counters:
            self.counters[key] = self.counters.get(key, 0.0) + float(counters[1])
        elif traces:
            self.traces[key] = self.traces.get(key, 0.0) + float(traces[1])
        elif gauges:
            self._merge_gauge(key, header, float(gauges[2]))
        elif sampled:
            self._merge_sampled(key, header, sampled)
        else:
            self._merge_set(key, header, sets[1])
        self.merged.add(name)
        self.hosts[header.host] += 1
        self.touched.add(key)
        return True

    def _merge_gauge(self, key: str, header: PartialHeader, value: float) -> None:
        current = self.gauges.get(key)
        if current is None or (header.seen, header.host) >= (current[0], current[1]):
            self.gauges[key] = [header.seen, header.host, value]

    def _merge_sampled(self, key: str, header: PartialHeader, entry: list[Any]) -> None:
        _, mtype, count, values = entry
        if mtype not in OUTPUT_TYPE_NAMES or not isinstance(values, bytes) or len(values) % 8:
            raise ValueError("a timer partial's type or values are not a batch body's")
        kept = self.sampled.get(key)
        if kept is None:
            kept = self.sampled[key] = [mtype, 0.0, [], [], []]
        kept[1] += float(count)
        if header.sketch:
            if len(header.stats) != 5:
                raise ValueError("a sketched timer partial without its five stats")
            kept[3].append(header.stats)
            kept[4].append(sketch_from_bytes(header.sketch))
        else:
            kept[2].append((float(count), values))

    def _merge_set(self, key: str, header: PartialHeader, members: list[Any]) -> None:
        kept = self.sets.get(key)
        if kept is None:
            kept = self.sets[key] = [set(), []]
        if header.hll:
            kept[1].append(hll_from_bytes(header.hll))
        kept[0].update(str(member) for member in members)

    def take_touched(self) -> set[str]:
        touched, self.touched = self.touched, set()
        return touched

    def aggregates(self, timestamp: float, interval: float, percentiles: list[float],
                   only: set[str] | None = None, bounds: BucketBounds | None = None) -> list[dict[str, Any]]:
        """The fleet aggregates, in the shape an edge's have, each tagged :data:`FLEET_TAG`; with
        ``only``, those of these series alone (a correction); a timer-like that ``bounds`` gives bounds
        carries its ``buckets``."""
        make = IntervalAggregates(timestamp, interval).make_keyed

        def wanted(table: dict[str, Any]) -> Any:
            return table.items() if only is None else ((k, v) for k, v in table.items() if k in only)

        out = [make(key + _FLEET_SUFFIX, "counter", {"value": total, "rate": total / interval})
               for key, total in wanted(self.counters)]
        for key, (mtype, count, exact, stats, sketches) in wanted(self.sampled):
            fields: dict[str, Any] = {"stats": timer_stats(count, exact, stats, sketches, percentiles)}
            le = bounds.of(series_name(key)) if bounds else None
            if le is not None:
                fields["buckets"] = {"le": le, "counts": timer_buckets(count, exact, sketches, le)}
            out.append(make(key + _FLEET_SUFFIX, OUTPUT_TYPE_NAMES[mtype], fields))
        for key, (members, hlls) in wanted(self.sets):
            size = float(len(members)) if not hlls else round(hll_union_of([*hlls, hll_of(members)]).get_estimate())
            out.append(make(key + _FLEET_SUFFIX, "set", {"value": float(size)}))
        out.extend(make(key + _FLEET_SUFFIX, "trace", {"value": total}) for key, total in wanted(self.traces))
        out.extend(make(key + _FLEET_SUFFIX, "gauge", {"value": value}) for key, (_, _, value) in wanted(self.gauges))
        return out


def timer_buckets(count: float, exact: list[tuple[float, bytes]], sketches: list[Any],
                  bounds: list[float]) -> list[float]:
    """The cumulative bucket counts of one fleet timer (see :func:`stages.aggregator.stats.bucket_counts`),
    ``+Inf``'s last: the count itself, and none above it."""
    totals = [0.0] * len(bounds)
    for entry_count, packed in exact:
        values = sorted(unpack_values(packed))
        if values:
            for i, counted in enumerate(bucket_counts(values, entry_count, bounds)[:-1]):
                totals[i] += counted
    for sketch in sketches:
        for i, bound in enumerate(bounds):
            totals[i] += at_most(sketch, bound)
    return [min(total, count) for total in totals] + [count]


def timer_stats(count: float, exact: list[tuple[float, bytes]], stats: list[list[float]], sketches: list[Any],
                percentiles: list[float]) -> dict[str, float]:
    """The summary of one fleet timer: :func:`stages.aggregator.stats.summary` over every value while
    all came exactly, else the exact moments with the sketch's quantiles."""
    if not sketches:
        return summary(list(unpack_values(b"".join(values for _, values in exact))), count, percentiles)
    merged = new_sketch()  # the kept sketches stay as they came: a correction merges them again
    for sketch in sketches:
        merged.merge(sketch)
    n, total, sum_squares = 0.0, 0.0, 0.0
    low, high = math.inf, -math.inf
    for entry_count, packed in exact:
        values = unpack_values(packed)
        if values:
            merged.merge(sketch_of(values, entry_count / len(values)))
            n += len(values)
            total += math.fsum(values)
            sum_squares += math.fsum(v * v for v in values)
            low, high = min(low, min(values)), max(high, max(values))
    for values_n, values_sum, values_min, values_max, values_squares in stats:
        n += values_n
        total += values_sum
        sum_squares += values_squares
        low, high = min(low, values_min), max(high, values_max)
    mean = total / n
    out = timer_statistics(count, total, low, high, mean, quantile(merged, 50),
                           math.sqrt(max(0.0, sum_squares / n - mean * mean)))
    for pct in percentiles:
        out[percentile_key(pct)] = quantile(merged, pct)
    return out
