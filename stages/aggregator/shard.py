"""One shard's state: interval buckets aligned to the wall clock, gauges, and the batch ledger. No I/O.

Interval ``k`` covers ``[k·I, (k+1)·I)`` of unix time; a batch belongs to the interval of its ``ts``
(the receiver closes a batch at every interval edge, so a batch never straddles two). Interval ``k``
is flushed once the clock passes its end plus :data:`FLUSH_GRACE_SECS`, so batches still in flight
land in it. A batch for an interval already flushed is folded into the oldest open interval and
counted as late: a closed interval is never reopened, and nothing is lost.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any

from stages.aggregator.series import COUNTER, GAUGE, Gauges, IntervalBucket, SeriesLimit
from stages.contract import BatchHeader
from stages.model import Tags, aggregate, tag_tuple

#: How long after an interval's end its flush waits for batches still in flight.
FLUSH_GRACE_SECS = 0.25
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
    aggregates: list[dict[str, Any]]
    seq_gaps: dict[str, int]
    #: src → samples in the batches of ``seq_gaps``
    gap_samples: dict[str, int]
    #: name → series folded into its overflow series in this interval
    folded: dict[str, int]
    #: per receiver stream, the batches whose samples this interval holds (see FlushHeader.covers)
    covers: dict[str, list[int]]


class ShardState:
    def __init__(self, shard: int, interval: float, percentiles: list[float], expire_after: int,
                 self_prefix: str, default_tags: dict[str, str], now: float | None = None,
                 series_limit: int = 10_000) -> None:
        self.shard = shard
        self.interval = interval
        self.percentiles = percentiles
        self.self_prefix = self_prefix
        self.default_tags = default_tags
        self.series_limit = series_limit
        self.overflow_tags = tag_tuple({OVERFLOW_TAG: "true"}, default_tags)
        self.buckets: dict[int, IntervalBucket] = {}
        self.gauges = Gauges(expire_after, SeriesLimit(series_limit, self.overflow_tags))
        #: Every interval up to this one has been flushed.
        self.closed_through = self.index_of(time.time() if now is None else now) - 1
        #: (src, epoch) → (last batch seq seen, samples sent through it): a jump counts what was lost between.
        self.last_seq: dict[tuple[str, int], tuple[int, int]] = {}
        self.seq_gaps: dict[str, int] = {}
        self.gap_samples: dict[str, int] = {}
        self.late_samples = 0
        self.samples = 0

    def index_of(self, ts: float) -> int:
        return math.floor(ts / self.interval)

    def start_of(self, index: int) -> float:
        return round(index * self.interval, 6)

    def add_batch(self, header: BatchHeader, body: bytes) -> None:
        self._account(header)
        index = self.index_of(header.ts)
        if index <= self.closed_through:
            index = self.closed_through + 1
            self.late_samples += header.metrics
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = self._new_bucket()
        bucket.merge_frame(body)
        bucket.samples += header.metrics
        # Per bucket, so a flush claims exactly the batches whose samples are in it: a crash before
        # the next flush then shows as a gap in the forwarder's ledger.
        stream = f"{header.src}@{header.epoch}"
        through = header.sent_before + header.metrics
        cover = bucket.covers.get(stream)
        if cover is None:
            bucket.covers[stream] = [header.seq, header.sent_before, header.seq, through]
        else:
            cover[2], cover[3] = header.seq, through
        self.samples += header.metrics

    def _new_bucket(self) -> IntervalBucket:
        return IntervalBucket(SeriesLimit(self.series_limit, self.overflow_tags))

    def _account(self, header: BatchHeader) -> None:
        stream = (header.src, header.epoch)
        last = self.last_seq.get(stream)
        through = header.sent_before + header.metrics
        if last is not None and header.seq > last[0] + 1:
            self.seq_gaps[header.src] = self.seq_gaps.get(header.src, 0) + header.seq - last[0] - 1
            self.gap_samples[header.src] = self.gap_samples.get(header.src, 0) + header.sent_before - last[1]
        self.last_seq[stream] = (header.seq, through)

    def next_deadline(self) -> float:
        """Unix time at which the oldest open interval is due."""
        return self.start_of(self.closed_through + 2) + FLUSH_GRACE_SECS

    def due(self, now: float) -> list[ClosedInterval]:
        """Close every interval whose end plus grace has passed, oldest first."""
        last_due = self.index_of(now - FLUSH_GRACE_SECS) - 1
        if last_due <= self.closed_through:
            return []
        # After a long stall only intervals with data, and the newest, are worth a flush of their own.
        indexes = sorted(i for i in self.buckets if i <= last_due)
        if not indexes or indexes[-1] != last_due:
            indexes.append(last_due)
        return [self._close(index) for index in indexes]

    def close_all(self) -> list[ClosedInterval]:
        """Close every open interval now, partial ones included (a planned stop)."""
        indexes = sorted(self.buckets)
        if not indexes:
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
        bucket = self.buckets.pop(index, None) or self._new_bucket()
        bucket.close()
        start = self.start_of(index)
        end = self.start_of(index + 1)
        self.gauges.apply(bucket.gauge_changes, index)
        aggregates = bucket.aggregates(end, self.interval, self.percentiles)
        aggregates.extend(self.gauges.aggregates(index, end, self.interval))
        self.closed_through = max(self.closed_through, index)
        gaps, self.seq_gaps = self.seq_gaps, {}
        gap_samples, self.gap_samples = self.gap_samples, {}
        folded = dict(bucket.limit.folded)
        for name, count in self.gauges.limit.folded.items():
            folded[name] = folded.get(name, 0) + count
        self.gauges.limit.folded.clear()
        if self.self_prefix:
            aggregates.extend(self._self_metrics(bucket, len(aggregates), gaps, gap_samples, folded, end,
                                                 time.perf_counter() - started))
        return ClosedInterval(index, start, self.interval, aggregates, gaps, gap_samples, folded, bucket.covers)

    def _self_metrics(self, bucket: IntervalBucket, series: int, gaps: dict[str, int], gap_samples: dict[str, int],
                      folded: dict[str, int], end: float, flush_secs: float) -> list[dict[str, Any]]:
        tags = self._self_tags({"shard": str(self.shard)})
        prefix = f"{self.self_prefix}aggregator."
        out = [
            aggregate(f"{prefix}series", GAUGE, tags, end, self.interval, value=float(series)),
            aggregate(f"{prefix}gauges", GAUGE, tags, end, self.interval, value=float(len(self.gauges.values))),
            aggregate(f"{prefix}flush_ms", GAUGE, tags, end, self.interval, value=round(flush_secs * 1000, 3)),
        ]
        if bucket.samples:
            out.append(aggregate(f"{prefix}samples", COUNTER, tags, end, self.interval,
                                 value=float(bucket.samples), rate=bucket.samples / self.interval))
        if self.late_samples:
            out.append(aggregate(f"{prefix}late_samples", COUNTER, tags, end, self.interval,
                                 value=float(self.late_samples), rate=self.late_samples / self.interval))
            self.late_samples = 0
        for name in sorted(folded, key=folded.__getitem__, reverse=True)[:OVERFLOW_REPORT_NAMES]:
            out.append(aggregate(f"{prefix}overflow_series", COUNTER, self._self_tags({"shard": str(self.shard),
                                 "metric": name}), end, self.interval, value=float(folded[name]),
                                 rate=folded[name] / self.interval))
        for src, lost in gaps.items():
            gap_tags = self._self_tags({"shard": str(self.shard), "src": src})
            out.append(aggregate(f"{prefix}lost_batches", COUNTER, gap_tags, end, self.interval,
                                 value=float(lost), rate=lost / self.interval))
        for src, lost in gap_samples.items():
            gap_tags = self._self_tags({"shard": str(self.shard), "src": src})
            out.append(aggregate(f"{prefix}lost_samples", COUNTER, gap_tags, end, self.interval,
                                 value=float(lost), rate=lost / self.interval))
        return out

    def _self_tags(self, tags: dict[str, str]) -> Tags:
        return tag_tuple(tags, self.default_tags)
