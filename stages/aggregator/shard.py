"""One shard's state: interval buckets aligned to the wall clock, gauges, and the batch ledger. No I/O.

Interval ``k`` covers ``[k·I, (k+1)·I)`` of unix time; a batch belongs to the interval of its ``ts``
(the receiver closes a batch at every interval edge, so a batch never straddles two). Interval ``k``
is flushed once the clock passes its end plus :data:`FLUSH_GRACE_SECS`, so batches still in flight
land in it. A batch for an interval already flushed is folded into the oldest open interval and
counted as late: a closed interval is never reopened, and nothing is lost.

Counts here are of metrics (what clients sent, as each batch's header says how many it stands
for), never of a batch's entries (one per series).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any

from stages.aggregator.busiest import busiest
from stages.aggregator.histogram_bounds import BucketBounds
from stages.aggregator.partials import PartialSource, partial_records
from stages.aggregator.series import Gauges, IntervalBucket, SeriesLimit
from stages.common.config import HistogramBuckets
from stages.common.contract import BatchHeader, FlushBodyPacker, decode_flush_body
from stages.common.figure_schemas import BusiestFigures
from stages.common.intervals import interval_index, interval_start
from stages.common.model import tag_tuple
from stages.common.selfstats import SelfStats

#: How long after an interval's end its flush waits for batches still in flight.
FLUSH_GRACE_SECS = 0.25
#: After a stall, how many of the newest due intervals are flushed for their live gauges alone, without
#: data of their own: enough for a new ring's shard that held its first interval for the carried gauges
#: (gauge_carry.CARRY_WAIT_SECS, 5 intervals of 1 s). Each interval of a longer stall would hold every
#: live gauge, all of them at once in the shard's memory.
GAUGE_CATCH_UP_INTERVALS = 10
#: The tag that marks a name's overflow series (see :class:`SeriesLimit`).
OVERFLOW_TAG = "pystatsd_overflow"
#: Names whose folding is reported per interval, the most folded first (keeps the self-metric bounded).
OVERFLOW_REPORT_NAMES = 10


@dataclass
class ClosedInterval:
    """The aggregates of one interval, ready to become a flush message."""

    index: int
    start: float
    interval: float
    #: the aggregates as a flush's body frame (:class:`stages.common.contract.FlushBodyPacker`), and how many
    body: memoryview
    count: int
    #: per receiver stream, the batches whose metrics this interval holds (see FlushHeader.covers)
    covers: dict[str, list[int]]
    seq_gaps: dict[str, int]
    #: src → metrics in the batches of ``seq_gaps``
    gap_metrics: dict[str, int]
    #: name → series folded into its overflow series in this interval
    folded: dict[str, int]
    #: how long building the aggregates took
    flush_ms: float = 0.0
    #: the interval's partials (Kafka key, value, ...) when the shard makes them (``ShardState.partials``)
    partials: list[bytes] | None = None
    #: new gauges dropped at the shard's ``gauges_limit`` in this interval
    dropped_gauges: int = 0
    #: the interval's busiest names and tag values, while a pystatsd top asks for them
    busiest: BusiestFigures | None = None

    @property
    def aggregates(self) -> list[dict[str, Any]]:
        """The aggregates decoded from the body: for tests and the curious, not the flush's way."""
        return decode_flush_body([b"", b"", bytes(self.body)])


def ttl_intervals(ttl: float, interval: float) -> int:
    """The idle intervals a gauge with a rule's ``ttl`` (seconds) lives: ``ceil(ttl / interval)``, at least one."""
    return max(1, math.ceil(ttl / interval))


def overrun_secs(closed: ClosedInterval, handed_at: float) -> float:
    """How long after the end of the interval following ``closed``'s its flush was handed on at
    ``handed_at`` (unix time): more than 0 is an overrun, the flush did not finish within an interval
    of its due time and the next one was due before it left. A shard whose flushes overrun falls
    behind for good (its flushes, too big to build in time, only grow)."""
    return handed_at - (closed.start + 2 * closed.interval)


class ShardState:
    def __init__(self, shard: int, interval: float, percentiles: list[float], expire_after: int,
                 self_prefix: str, default_tags: dict[str, str], now: float | None = None,
                 series_limit: int = 10_000, gauges_limit: int = 100_000,
                 histogram_buckets: list[HistogramBuckets] | None = None) -> None:
        self.shard = shard
        self.interval = interval
        self.percentiles = percentiles
        #: The bounds each timer-like is counted into at its flush (``histogram_buckets``).
        self.bounds = BucketBounds(histogram_buckets or [])
        self.stats = SelfStats(self_prefix, "aggregator", {"shard": str(shard)}, default_tags)
        #: The daemon's own metrics' prefix: not among the busiest names (a counter of them counts thousands).
        self.self_prefix = self_prefix
        self.series_limit = series_limit
        self.overflow_tags = tag_tuple({OVERFLOW_TAG: "true"}, default_tags)
        self.buckets: dict[int, IntervalBucket] = {}
        self.gauges = Gauges(expire_after, SeriesLimit(series_limit, self.overflow_tags), gauges_limit)
        #: Every interval up to this one has been flushed.
        self.closed_through = self.index_of(time.time() if now is None else now) - 1
        #: (src, epoch) → (last batch seq seen, metrics sent through it): a jump counts what was lost between.
        self.last_seq: dict[tuple[str, int], tuple[int, int]] = {}
        self.seq_gaps: dict[str, int] = {}
        self.gap_metrics: dict[str, int] = {}
        #: metrics of batches that came after their interval was flushed, since the last flush
        self.late_metrics = 0
        #: metrics of every batch merged since the start
        self.metrics = 0
        #: Set when a sink takes partials (format: partials): each closed interval makes them too.
        self.partials: PartialSource | None = None
        #: Set in a reshard: from this interval on the new ring reports this shard's gauges (gauge_carry),
        #: so an interval this shard closes from then on (after a stall, or of late batches) leaves them out.
        self.gauges_handed_at: int | None = None
        #: The tag keys a running pystatsd top asks this shard's busiest figures to group by (the loop sets
        #: them); None while no top runs: then the busiest names are not summed at all.
        self.top_tag_keys: list[str] | None = None
        #: Set in a reshard on a new ring's shard that adopted carried gauges: the first interval of its
        #: ring. One before it, closed after the carry arrived, is the retiring shard's to report.
        self.gauges_taken_over_at: int | None = None

    def reconfigure(self, percentiles: list[float], expire_after: int, series_limit: int, self_prefix: str,
                    default_tags: dict[str, str], gauges_limit: int = 100_000,
                    histogram_buckets: list[HistogramBuckets] | None = None) -> None:
        """A reload's settings, for the intervals not yet open (buckets already open keep their limit;
        a lower ``gauges_limit`` drops no live gauge: it takes no new one until enough have expired).
        Percentiles and histogram bounds apply to every flush from now on, as they are read at the flush."""
        self.percentiles = percentiles
        self.bounds = BucketBounds(histogram_buckets or [])
        self.gauges.expire_after = expire_after
        self.gauges.max_live = gauges_limit
        self.series_limit = series_limit
        self.overflow_tags = tag_tuple({OVERFLOW_TAG: "true"}, default_tags)
        self.gauges.limit.limit, self.gauges.limit.overflow_tags = series_limit, self.overflow_tags
        self.stats.retag(self_prefix, default_tags)
        self.self_prefix = self_prefix

    def index_of(self, ts: float) -> int:
        return interval_index(ts, self.interval)

    def start_of(self, index: int) -> float:
        return interval_start(index, self.interval)

    def add_batch(self, header: BatchHeader, body: bytes) -> None:
        self._account(header)
        index = self.index_of(header.ts)
        if index <= self.closed_through:
            index = self.closed_through + 1
            self.late_metrics += header.metrics
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = self.new_bucket()
        bucket.merge_frame(body, header.entry_metrics)
        bucket.metrics += header.metrics
        for key, ttl in header.gauge_ttls.items():
            bucket.gauge_ttls[key] = ttl_intervals(ttl, self.interval)
        # Per bucket, so a flush claims exactly the batches whose metrics are in it: a crash before
        # the next flush then shows as a gap in the forwarder's ledger.
        stream = f"{header.src}@{header.epoch}"
        through = header.sent_before + header.metrics
        cover = bucket.covers.get(stream)
        if cover is None:
            bucket.covers[stream] = [header.seq, header.sent_before, header.seq, through]
        else:
            cover[2], cover[3] = header.seq, through
        self.metrics += header.metrics

    def new_bucket(self) -> IntervalBucket:
        return IntervalBucket(SeriesLimit(self.series_limit, self.overflow_tags))

    def _account(self, header: BatchHeader) -> None:
        stream = (header.src, header.epoch)
        last = self.last_seq.get(stream)
        through = header.sent_before + header.metrics
        if last is not None and header.seq > last[0] + 1:
            self.seq_gaps[header.src] = self.seq_gaps.get(header.src, 0) + header.seq - last[0] - 1
            self.gap_metrics[header.src] = self.gap_metrics.get(header.src, 0) + header.sent_before - last[1]
        self.last_seq[stream] = (header.seq, through)

    def next_deadline(self) -> float:
        """Unix time at which the oldest open interval is due."""
        return self.start_of(self.closed_through + 2) + FLUSH_GRACE_SECS

    def due(self, now: float) -> list[ClosedInterval]:
        """Close every interval whose end plus grace has passed, oldest first.

        After a stall (a busy machine, a stop, a new ring's shard holding its first interval for the
        carried gauges) an interval is worth a flush of its own if it has data, is the newest, or is one
        of the last :data:`GAUGE_CATCH_UP_INTERVALS` and has a gauge this shard reports in it: so each
        gauge is in every interval until it expires, unless the stall was longer than that."""
        last_due = self.index_of(now - FLUSH_GRACE_SECS) - 1
        if last_due <= self.closed_through:
            return []
        catch_up_from = max(self.closed_through + 1, last_due - GAUGE_CATCH_UP_INTERVALS + 1)
        closed = [self._close(index) for index in sorted(self.buckets) if index < catch_up_from]
        for index in range(catch_up_from, last_due + 1):
            if index in self.buckets or index == last_due or self.reports_live_gauges(index):
                closed.append(self._close(index))
        return closed

    def reports_gauges(self, index: int) -> bool:
        """Whether this shard reports its gauges in interval ``index``: not when a reshard gave them to
        another ring, nor before its ring took them over."""
        return ((self.gauges_handed_at is None or index < self.gauges_handed_at)
                and (self.gauges_taken_over_at is None or index >= self.gauges_taken_over_at))

    def reports_live_gauges(self, index: int) -> bool:
        return self.reports_gauges(index) and self.gauges.live_at(index)

    def close_all(self, retiring: bool = False) -> list[ClosedInterval]:
        """Close every open interval now, partial ones included (a planned stop). Without any, the next
        interval is flushed with the live gauges, unless ``retiring`` (a reshard: another ring has
        taken this shard's names, and reports their intervals from now on)."""
        indexes = sorted(self.buckets)
        if not indexes and not retiring:
            indexes = [self.closed_through + 1]
        return [self._close(index) for index in indexes]

    def _close(self, index: int) -> ClosedInterval:
        # A full collection in the middle of building 100,000 aggregates costs tens of milliseconds
        # and finds nothing: everything built here stays referenced until the flush is sent.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._build(index)
        finally:
            if collecting:
                gc.enable()

    def _build(self, index: int) -> ClosedInterval:
        started = time.perf_counter()
        bucket = self.buckets.pop(index, None) or self.new_bucket()
        bucket.close(series_metrics=self.top_tag_keys is not None)
        start = self.start_of(index)
        end = self.start_of(index + 1)
        self.gauges.apply(bucket.gauge_changes, index, bucket.gauge_ttls)
        # Packed as they are made: the flush holds a chunk of them as dicts, then its packed body.
        packer = FlushBodyPacker()
        packer.add(bucket.each_aggregate(end, self.interval, self.percentiles, self.bounds,
                                         consume=self.partials is None))
        reports_gauges = self.reports_gauges(index)
        if reports_gauges:
            packer.add(self.gauges.each_aggregate(index, end, self.interval))
        self.closed_through = max(self.closed_through, index)
        gaps, self.seq_gaps = self.seq_gaps, {}
        gap_metrics, self.gap_metrics = self.gap_metrics, {}
        partials = (None if self.partials is None else
                    partial_records(bucket, self.gauges.values if reports_gauges else {}, start, self.interval,
                                    self.partials))
        folded = dict(bucket.limit.folded)
        for name, count in self.gauges.limit.folded.items():
            folded[name] = folded.get(name, 0) + count
        self.gauges.limit.folded.clear()
        dropped_gauges, self.gauges.dropped = self.gauges.dropped, 0
        flush_ms = round((time.perf_counter() - started) * 1000, 3)
        if self.stats.enabled:
            if dropped_gauges:
                self.stats.add("dropped_gauges", dropped_gauges)
            packer.add(self._self_metrics(bucket, packer.count, gaps, gap_metrics, folded, end, flush_ms))
        return ClosedInterval(index, start, self.interval, packer.body(), packer.count, bucket.covers,
                              seq_gaps=gaps, gap_metrics=gap_metrics, folded=folded, flush_ms=flush_ms,
                              partials=partials, dropped_gauges=dropped_gauges,
                              busiest=None if self.top_tag_keys is None else
                              busiest(bucket, folded, self.interval, self.series_limit, self.top_tag_keys,
                                      self.self_prefix))

    def _self_metrics(self, bucket: IntervalBucket, series: int, gaps: dict[str, int], gap_metrics: dict[str, int],
                      folded: dict[str, int], end: float, flush_ms: float) -> list[dict[str, Any]]:
        """``<prefix>aggregator.*`` of the interval ending at ``end``, each tagged with this shard."""
        stats = self.stats
        stats.gauge("series", series)
        stats.gauge("gauges", len(self.gauges.values))
        stats.gauge("flush_ms", flush_ms)
        if bucket.metrics:
            stats.add("metrics", bucket.metrics)
        if self.late_metrics:
            stats.add("late_metrics", self.late_metrics)
            self.late_metrics = 0
        for name in sorted(folded, key=folded.__getitem__, reverse=True)[:OVERFLOW_REPORT_NAMES]:
            stats.add("overflow_series", folded[name], {"metric": name})
        for src, lost in gaps.items():
            stats.add("lost_batches", lost, {"src": src})
        for src, lost in gap_metrics.items():
            stats.add("lost_metrics", lost, {"src": src})
        return stats.aggregates(end, self.interval)
