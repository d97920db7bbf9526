"""Per-interval accumulators for every metric type, and the gauges that outlive an interval. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from stages.aggregator.histogram_bounds import BucketBounds, bucket_fields
from stages.aggregator.stats import summary
from stages.common.compiled import wanted as use_compiled
from stages.common.contract import (
    ENTRY_METRICS_WIDTH,
    BatchBody,
    decode_batch_body,
    unpack_entry_metrics,
    unpack_values,
)
from stages.common.model import (
    OUTPUT_TYPE_NAMES,
    SAMPLED_TYPES,
    IntervalAggregates,
    MetricType,
    Tags,
    series_key,
    series_name,
)

if TYPE_CHECKING:
    from stages.aggregator import _bucket
CompiledBucket: type[_bucket.Bucket] | None
try:
    from stages.aggregator._bucket import Bucket as CompiledBucket
except ImportError:  # built by pip install where a C compiler is found; merge() does the same job
    CompiledBucket = None

COUNTER = int(MetricType.COUNTER)
GAUGE = int(MetricType.GAUGE)
SET = int(MetricType.SET)
TRACE = int(MetricType.TRACE)

#: A series is named by its :func:`stages.common.model.series_key`.
SeriesKey = str


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

    def admit(self, key: SeriesKey) -> SeriesKey:
        """The key a new series is kept under: its own, or its name's overflow series."""
        name = series_name(key)
        count = self.per_name.get(name, 0)
        if count >= self.limit:
            overflow = series_key(name, self.overflow_tags)
            if key != overflow:
                self.folded[name] = self.folded.get(name, 0) + 1
                return overflow
        self.per_name[name] = count + 1
        return key

    def release(self, name: str) -> None:
        """One series of ``name`` is gone (an expired gauge)."""
        count = self.per_name.get(name, 0) - 1
        if count > 0:
            self.per_name[name] = count
        else:
            self.per_name.pop(name, None)


class IntervalBucket:
    """Everything one shard received for one interval.

    Batch bodies come in through :meth:`merge_frame`: into the compiled bucket (bucket.c) where it
    was built, which keeps them until :meth:`close` turns them into the tables below; else through
    :meth:`merge`, the specification, straight into them.

    Each series' metrics (``series_metrics``: what ``pystatsd top`` shows) are the batch headers'
    ``entry_metrics`` added up per series kept (an entry without one, of an older receiver, a handoff or
    a partial, counts one): unweighted, one per value a client sent, as the headers' ``metrics`` count.
    """

    __slots__ = ("counters", "gauge_changes", "sampled", "sets", "traces", "metrics", "series_metrics", "known",
                 "limit", "covers", "gauge_ttls", "_compiled")

    def __init__(self, limit: SeriesLimit, compiled: bool | None = None) -> None:
        self.counters: dict[SeriesKey, float] = {}
        #: key → [was set, value]: a set replaces the gauge, a change adds to what it was.
        self.gauge_changes: dict[SeriesKey, list[Any]] = {}
        #: type → key → [the batches' packed values, sample-rate-corrected count]: unpacked at the flush
        self.sampled: dict[int, dict[SeriesKey, list[Any]]] = {}
        self.sets: dict[SeriesKey, set[str]] = {}
        self.traces: dict[SeriesKey, float] = {}
        #: metrics the batches merged stood for
        self.metrics = 0
        #: key → metrics merged into the series (all its types): kept by merge, by the compiled bucket only
        #: filled at ``close(series_metrics=True)``
        self.series_metrics: dict[SeriesKey, int] = {}
        #: Every series seen in this interval, as admitted by ``limit`` (which counts them per name).
        self.known: dict[SeriesKey, SeriesKey] = {}
        self.limit = limit
        #: "src@epoch" → [first seq, sent_before, last seq, sent through last] of the batches merged
        self.covers: dict[str, list[int]] = {}
        #: key → intervals a gauge changed here lives idle, from its batches' ``gauge_ttls`` (see :class:`Gauges`)
        self.gauge_ttls: dict[SeriesKey, int] = {}
        if compiled is None:
            compiled = use_compiled()
        self._compiled = CompiledBucket(limit.admit) if compiled and CompiledBucket is not None else None

    def merge_frame(self, frame: bytes, entry_metrics: bytes = b"") -> None:
        """Add a batch's body frame and its header's ``entry_metrics`` (ValueError or DecodeError when it is
        not one, or they do not match)."""
        if self._compiled is not None:
            self._compiled.merge(frame, entry_metrics)
        else:
            self.merge(decode_batch_body(frame), entry_metrics)

    def close(self, series_metrics: bool = False) -> None:
        """Ready the tables for the flush, and ``series_metrics`` when asked (the Python keeps it anyway); no
        batch is merged after."""
        if self._compiled is not None:
            self.counters, self.gauge_changes, self.sampled, self.sets, self.traces = self._compiled.contents()
            if series_metrics:
                self.series_metrics = self._compiled.series_metrics()
            self._compiled = None

    def merge(self, body: BatchBody, entry_metrics: bytes = b"") -> None:
        """Add a batch's entries, series by series (see :mod:`stages.common.contract` for their fields), and
        to each series the metrics its entry stands for (``entry_metrics``, in body order; empty: one each).

        A key already held in its type's table was admitted as itself: only the others go through
        ``known`` (and the series limit), which saves a lookup per entry on the hot path.
        """
        if len(entry_metrics) % ENTRY_METRICS_WIDTH:
            raise ValueError("entry_metrics: not whole counts")
        counts: Iterator[int] = iter(unpack_entry_metrics(entry_metrics)) if entry_metrics else repeat(1)
        try:
            self._merge_sums(self.counters, body.counters, counts)
            self._merge_gauges(body.gauges, counts)
            self._merge_sampled(body.sampled, counts)
            self._merge_sets(body.sets, counts)
            self._merge_sums(self.traces, body.traces, counts)
        except StopIteration:  # next(counts) after the last: each section adds each entry's count inline
            raise ValueError("entry_metrics: fewer counts than the body has entries") from None
        if entry_metrics and next(counts, None) is not None:
            raise ValueError("entry_metrics: more counts than the body has entries")

    def _merge_sums(self, totals: dict[SeriesKey, float], section: Sequence[Any], counts: Iterator[int]) -> None:
        metrics = self.series_metrics
        entries = iter(section)
        for key, value in zip(entries, entries, strict=True):
            total = totals.get(key)
            if total is None:
                key = self._series(key)
                total = totals.get(key, 0.0)
            totals[key] = total + value
            metrics[key] = metrics.get(key, 0) + next(counts)

    def _merge_gauges(self, section: Sequence[Any], counts: Iterator[int]) -> None:
        gauges, metrics = self.gauge_changes, self.series_metrics
        entries = iter(section)
        for key, was_set, value in zip(entries, entries, entries, strict=True):
            change = gauges.get(key)
            if change is None:
                key = self._series(key)
                change = gauges.get(key)
            if was_set or change is None:
                gauges[key] = [was_set, value]
            else:
                change[1] += value
            metrics[key] = metrics.get(key, 0) + next(counts)

    def _merge_sampled(self, section: Sequence[Any], counts: Iterator[int]) -> None:
        metrics = self.series_metrics
        entries = iter(section)
        for key, mtype, count, values in zip(entries, entries, entries, entries, strict=True):
            of_type = self.sampled.get(mtype)
            if of_type is None:
                if mtype not in SAMPLED_TYPES:
                    raise ValueError(f"sampled entry of type {mtype!r}")
                of_type = self.sampled[mtype] = {}
            if len(values) % 8:
                raise ValueError("sampled values are not whole float64s")
            entry = of_type.get(key)
            if entry is None:
                key = self._series(key)
                entry = of_type.get(key)
                if entry is None:
                    of_type[key] = [[values], count]
                    metrics[key] = metrics.get(key, 0) + next(counts)
                    continue
            entry[0].append(values)
            entry[1] += count
            metrics[key] = metrics.get(key, 0) + next(counts)

    def _merge_sets(self, section: Sequence[Any], counts: Iterator[int]) -> None:
        sets, metrics = self.sets, self.series_metrics
        entries = iter(section)
        for key, members in zip(entries, entries, strict=True):
            kept = sets.get(key)
            if kept is None:
                key = self._series(key)
                kept = sets.get(key)
                if kept is None:
                    sets[key] = set(members)
                    metrics[key] = metrics.get(key, 0) + next(counts)
                    continue
            kept.update(members)
            metrics[key] = metrics.get(key, 0) + next(counts)

    def _series(self, key: SeriesKey) -> SeriesKey:
        """The key a series is kept under in this interval (its own, or its name's overflow series)."""
        series = self.known.get(key)
        if series is None:
            series = self.known[key] = self.limit.admit(key)
        return series

    def aggregates(self, timestamp: float, interval: float, percentiles: list[float],
                   bounds: BucketBounds | None = None) -> list[dict[str, Any]]:
        """Counters, timer-likes, sets and traces of this interval (gauges are kept by :class:`Gauges`);
        a timer-like whose name ``bounds`` gives bounds carries its ``buckets`` too."""
        return list(self.each_aggregate(timestamp, interval, percentiles, bounds))

    def each_aggregate(self, timestamp: float, interval: float, percentiles: list[float],
                       bounds: BucketBounds | None = None, consume: bool = False) -> Iterator[dict[str, Any]]:
        """:meth:`aggregates` one at a time, each made as it is asked for: a flush packed as they come
        holds a chunk of them, not 100,000 dicts. With ``consume`` (a closed bucket nothing reads after:
        no partials) each timer-like's values and each set's members are let go once its aggregate is
        made, so the interval's values are not held beside the flush being packed."""
        make = IntervalAggregates(timestamp, interval).make_keyed
        for key, value in self.counters.items():
            yield make(key, "counter", {"value": value, "rate": value / interval})
        for mtype, of_type in self.sampled.items():
            type_name = OUTPUT_TYPE_NAMES[mtype]
            for key, (packed, count) in of_type.items():
                values = list(unpack_values(b"".join(packed)))
                if consume:
                    packed.clear()
                fields: dict[str, Any] = {"stats": summary(values, count, percentiles)}  # sorts the values
                buckets = bucket_fields(values, count, bounds.of(series_name(key))) if bounds else None
                if buckets is not None:
                    fields["buckets"] = buckets
                yield make(key, type_name, fields)
        for key, members in self.sets.items():
            size = float(len(members))
            if consume:
                members.clear()
            yield make(key, "set", {"value": size})
        for key, value in self.traces.items():
            yield make(key, "trace", {"value": value})


class Gauges:
    """Gauge values carried from interval to interval until idle for ``expire_after`` intervals, or for
    the intervals a rule's ttl makes of it (``expire_for``: the batches' ``gauge_ttls``, as of its last
    change; a change without one brings it back to ``expire_after``).

    At most ``max_live`` are kept: a gauge a shard has not heard of while it holds that many is
    dropped, and ``dropped`` counts it (once per interval it came in). The newest goes, not an old
    one: the gauges already reported keep their exact values, and a dropped gauge takes a place
    that an expired one frees. Folding a gauge into another would report a value no client sent.
    """

    def __init__(self, expire_after: int, limit: SeriesLimit, max_live: int = 100_000) -> None:
        self.expire_after = expire_after
        #: key → [value, index of the last interval that changed it]
        self.values: dict[SeriesKey, list[Any]] = {}
        #: key → intervals it lives idle, for the live gauges a rule gave a ttl
        self.expire_for: dict[SeriesKey, int] = {}
        self.limit = limit
        self.max_live = max_live
        #: new gauges dropped at ``max_live`` since the caller last cleared it
        self.dropped = 0

    def admit(self, key: SeriesKey) -> SeriesKey | None:
        """The key a gauge not live yet is kept under (see :class:`SeriesLimit`), or None: dropped, counted."""
        if len(self.values) >= self.max_live:
            self.dropped += 1
            return None
        return self.limit.admit(key)

    def apply(self, changes: dict[SeriesKey, list[Any]], index: int, ttls: dict[SeriesKey, int] | None = None) -> None:
        """The interval ``index``'s changes; ``ttls``: the intervals its changed gauges with a ttl live idle."""
        ttls = ttls or {}
        for key, (was_set, value) in changes.items():
            current = self.values.get(key)
            if current is None:
                admitted = self.admit(key)
                if admitted is None:
                    continue
                key = admitted
                current = self.values.get(key)
            if was_set or current is None:
                self.values[key] = [value, index]
            else:
                current[0] += value
                current[1] = index
            expire_for = ttls.get(key)
            if expire_for is not None:
                self.expire_for[key] = expire_for
            elif self.expire_for:
                self.expire_for.pop(key, None)

    def aggregates(self, index: int, timestamp: float, interval: float) -> list[dict[str, Any]]:
        """Every live gauge's value at the end of interval ``index``; forgets the idle ones."""
        return list(self.each_aggregate(index, timestamp, interval))

    def each_aggregate(self, index: int, timestamp: float, interval: float) -> Iterator[dict[str, Any]]:
        """:meth:`aggregates`, each made as it is asked for; the idle gauges are forgotten at once."""
        self.expire(index)
        make = IntervalAggregates(timestamp, interval).make_keyed
        return (make(key, "gauge", {"value": value}) for key, (value, _) in self.values.items())

    def idle_too_long(self, index: int) -> list[SeriesKey]:
        """The gauges idle too long to be reported at the end of interval ``index``."""
        expire_for, default = self.expire_for, self.expire_after
        return [key for key, (_, seen) in self.values.items() if index - seen >= expire_for.get(key, default)]

    def live_at(self, index: int) -> bool:
        """Whether any gauge is still reported at the end of interval ``index``."""
        return len(self.idle_too_long(index)) < len(self.values)

    def expire(self, index: int) -> None:
        """Forget the gauges idle too long at the end of interval ``index``."""
        expire_for = self.expire_for
        for key in self.idle_too_long(index):
            del self.values[key]
            expire_for.pop(key, None)
            self.limit.release(series_name(key))
