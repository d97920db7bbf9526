"""Per-interval accumulators for every metric type, and the gauges that outlive an interval. Pure."""

from __future__ import annotations

from typing import Any

from stages.aggregator.stats import summary
from stages.model import IntervalAggregates, MetricType, Sample, Tags

COUNTER = int(MetricType.COUNTER)
GAUGE = int(MetricType.GAUGE)
GAUGE_DELTA = int(MetricType.GAUGE_DELTA)
SET = int(MetricType.SET)
TRACE = int(MetricType.TRACE)

SeriesKey = tuple[str, Tags]


class SeriesLimit:
    """At most ``limit`` series per metric name; the rest fold into that name's overflow series.

    Folding keeps totals exact where a tag explodes (a user id as a tag, say) while memory stays
    bounded; ``folded`` counts, per name, the series that were folded.
    """

    def __init__(self, limit: int, overflow_tags: Tags) -> None:
        self.limit = limit
        self.overflow_tags = overflow_tags
        self.per_name: dict[str, int] = {}
        self.folded: dict[str, int] = {}

    def admit(self, name: str, tags: Tags) -> SeriesKey:
        """The key a new series of ``name`` is kept under: its own, or the overflow series."""
        count = self.per_name.get(name, 0)
        if count >= self.limit and tags != self.overflow_tags:
            self.folded[name] = self.folded.get(name, 0) + 1
            return (name, self.overflow_tags)
        self.per_name[name] = count + 1
        return (name, tags)

    def release(self, name: str) -> None:
        """One series of ``name`` is gone (an expired gauge)."""
        count = self.per_name.get(name, 0) - 1
        if count > 0:
            self.per_name[name] = count
        else:
            self.per_name.pop(name, None)


class IntervalBucket:
    """Everything one shard received for one interval."""

    __slots__ = ("counters", "gauge_changes", "sampled", "sets", "traces", "samples", "known", "limit", "covers")

    def __init__(self, limit: SeriesLimit) -> None:
        self.counters: dict[SeriesKey, float] = {}
        #: key → [was set, value]: a set replaces the gauge, a delta adds to what it was.
        self.gauge_changes: dict[SeriesKey, list[Any]] = {}
        #: (name, tags, type) → [values, sample-rate-corrected count]
        self.sampled: dict[tuple[str, Tags, int], list[Any]] = {}
        self.sets: dict[SeriesKey, set[str]] = {}
        self.traces: dict[SeriesKey, float] = {}
        #: metrics the batches added stood for (a batch's samples may carry summed repeats)
        self.samples = 0
        #: Every series seen in this interval, as admitted by ``limit`` (which counts them per name).
        self.known: dict[SeriesKey, SeriesKey] = {}
        self.limit = limit
        #: "src@epoch" → [first seq, sent_before, last seq, sent through last] of the batches added
        self.covers: dict[str, list[int]] = {}

    def add(self, samples: list[Sample]) -> None:
        counters, traces, known = self.counters, self.traces, self.known
        for name, mtype, value, rate, tags in samples:
            key = known.get((name, tags))  # type: ignore[assignment]
            if key is None:
                key = known[(name, tags)] = self.limit.admit(name, tags)
            if mtype == COUNTER:
                counters[key] = counters.get(key, 0.0) + value / rate  # type: ignore[operator]
            elif mtype == GAUGE:
                self.gauge_changes[key] = [True, value]
            elif mtype == GAUGE_DELTA:
                change = self.gauge_changes.get(key)
                if change is None:
                    self.gauge_changes[key] = [False, value]
                else:
                    change[1] += value
            elif mtype == SET:
                members = self.sets.get(key)
                if members is None:
                    self.sets[key] = {str(value)}
                else:
                    members.add(str(value))
            elif mtype == TRACE:
                traces[key] = traces.get(key, 0.0) + 1.0 / rate
            else:
                skey = (name, key[1], mtype)
                entry = self.sampled.get(skey)
                if entry is None:
                    self.sampled[skey] = [[value], 1.0 / rate]
                else:
                    entry[0].append(value)
                    entry[1] += 1.0 / rate

    def aggregates(self, timestamp: float, interval: float, percentiles: list[float]) -> list[dict[str, Any]]:
        """Counters, timer-likes, sets and traces of this interval (gauges are kept by :class:`Gauges`)."""
        make = IntervalAggregates(timestamp, interval).make
        out = [make(name, COUNTER, tags, {"value": value, "rate": value / interval})
               for (name, tags), value in self.counters.items()]
        out.extend(make(name, mtype, tags, {"stats": summary(values, count, percentiles)})
                   for (name, tags, mtype), (values, count) in self.sampled.items())
        out.extend(make(name, SET, tags, {"value": float(len(members))}) for (name, tags), members in self.sets.items())
        out.extend(make(name, TRACE, tags, {"value": value}) for (name, tags), value in self.traces.items())
        return out


class Gauges:
    """Gauge values carried from interval to interval until idle for ``expire_after`` intervals."""

    def __init__(self, expire_after: int, limit: SeriesLimit) -> None:
        self.expire_after = expire_after
        #: key → [value, index of the last interval that changed it]
        self.values: dict[SeriesKey, list[Any]] = {}
        self.limit = limit

    def apply(self, changes: dict[SeriesKey, list[Any]], index: int) -> None:
        for key, (was_set, value) in changes.items():
            current = self.values.get(key)
            if current is None:
                key = self.limit.admit(*key)
                current = self.values.get(key)
            if was_set or current is None:
                self.values[key] = [value, index]
            else:
                current[0] += value
                current[1] = index

    def aggregates(self, index: int, timestamp: float, interval: float) -> list[dict[str, Any]]:
        """Every live gauge's value at the end of interval ``index``; forgets the idle ones."""
        expired = [key for key, (_, seen) in self.values.items() if index - seen >= self.expire_after]
        for key in expired:
            del self.values[key]
            self.limit.release(key[0])
        make = IntervalAggregates(timestamp, interval).make
        return [make(name, GAUGE, tags, {"value": value}) for (name, tags), (value, _) in self.values.items()]
