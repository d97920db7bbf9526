"""A restarting shard's open intervals, handed to its next instance through the run directory.

A shard stopped on its own (a restart, while supervisord runs on) does not flush its open
intervals as partial ones: that would give a series two records for one interval, one from each
instance. It writes them here instead, with the rest of what continues across the restart (the
gauges, the receivers' batch sequences, its flush stream), and its next instance reads them
before it takes a batch: the interval is flushed once, whole, by whichever instance is running
when it is due. An interval that ended while no instance ran is flushed by the next one as soon as
it starts, with its own timestamp.

The file is written atomically (a private temporary file, renamed) and removed by the instance
that takes it before anything of it is merged, so it is merged once at most. One that is not this
shard's (another shard count, interval or format) or is older than the gauges' expiry horizon is
refused, logged and counted; the forwarder's ledger then counts the metrics it held as lost, as
for a crash. A killed shard writes nothing: its open interval is lost and counted, as before.

An upgrade by restart has the old release write the file and the new one read it, so the format is
versioned: a msgpack map of :class:`Handoff`'s fields and ``"kind": "pystatsd.handoff.v1"`` (each
bucket's tables as a batch v2 body, :mod:`stages.common.contract`). Within v1 fields may only be added, each
with a default, and each addition gets a golden file of its own (tests/data/rundir/handoff.v1*.bin;
v1.1: ``gauge_expiry`` and ``bucket_gauge_ttls``, what a rule's ttl makes of a gauge's expiry; v1.2:
``bucket_entry_metrics``, each bucket body's entry metrics as a batch header's, so each series' metrics
go on as counted, for ``pystatsd top``; a bucket without, each entry one):
the writer produces the newest bytes and the reader keeps reading every older file. Any other change
is a new kind (``pystatsd.handoff.v2``), read beside v1 for one release. A file of a newer release
(a field this one does not know) is refused, as one of another shard is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from stages.aggregator.series import IntervalBucket, SeriesKey
from stages.aggregator.shard import ShardState
from stages.common.contract import BODY_STRIDES, BatchBody, pack_batch_body, pack_entry_metrics
from stages.common.model import series_key, series_name
from stages.rundir.private_file import read_private, write_private

log = logging.getLogger(__name__)

HANDOFF_V1 = "pystatsd.handoff.v1"


class HandoffRefused(Exception):
    """A hand-off file that must not be merged; the message says why."""


@dataclass
class Handoff:
    """What a stopping shard hands on; :func:`capture` makes it, :func:`restore` applies it."""

    shard: int
    shards: int
    interval: float
    written_at: float
    #: The shard's flush stream to the forwarder, continued by the next instance.
    epoch: int
    seq: int
    closed_through: int
    #: index → (the bucket as a batch body, metrics it holds, its covers, series it folded per name)
    buckets: dict[int, tuple[bytes, int, dict[str, list[int]], dict[str, int]]] = field(default_factory=dict)
    #: [key, value, index of the last interval that changed it], overflow series last
    gauges: list[list[Any]] = field(default_factory=list)
    #: gauge series folded per name since the last flush
    gauges_folded: dict[str, int] = field(default_factory=dict)
    #: [src, epoch, last seq, metrics sent through it] per receiver stream
    streams: list[list[Any]] = field(default_factory=list)
    seq_gaps: dict[str, int] = field(default_factory=dict)
    gap_metrics: dict[str, int] = field(default_factory=dict)
    late_metrics: int = 0
    metrics: int = 0
    #: v1.1: key → idle intervals of the live gauges a rule gave a ttl (``Gauges.expire_for``)
    gauge_expiry: dict[str, int] = field(default_factory=dict)
    #: v1.1: index → the same for the gauges each open bucket changed (``IntervalBucket.gauge_ttls``)
    bucket_gauge_ttls: dict[int, dict[str, int]] = field(default_factory=dict)
    #: v1.2: index → the bucket body's entry metrics (a batch header's ``entry_metrics``: its series' metrics)
    bucket_entry_metrics: dict[int, bytes] = field(default_factory=dict)

    def encode(self) -> bytes:
        return bytes(msgpack.packb({"kind": HANDOFF_V1, **self.__dict__}, use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> Handoff:
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(raw, dict) or raw.pop("kind", None) != HANDOFF_V1:
                raise HandoffRefused("not a pystatsd.handoff.v1 file")
            raw["buckets"] = {int(index): (bytes(body), int(metrics), dict(covers), dict(folded))
                              for index, (body, metrics, covers, folded) in raw["buckets"].items()}
            raw["bucket_gauge_ttls"] = {int(index): {str(key): int(n) for key, n in ttls.items()}
                                        for index, ttls in raw.get("bucket_gauge_ttls", {}).items()}
            raw["gauge_expiry"] = {str(key): int(n) for key, n in raw.get("gauge_expiry", {}).items()}
            raw["bucket_entry_metrics"] = {int(index): bytes(counts)
                                           for index, counts in raw.get("bucket_entry_metrics", {}).items()}
            return cls(**raw)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise HandoffRefused(f"unreadable ({exc})") from None


def handoff_path(run_dir: Path, shard: int, shards: int) -> Path:
    """Per shard and shard count: after a reshard, shard K of another count is another shard."""
    return run_dir / f"handoff-shard-{shard}-of-{shards}.msgpack"


def capture(state: ShardState, shards: int, epoch: int, seq: int, now: float | None = None) -> Handoff:
    """Everything of ``state`` that continues in the next instance (its buckets closed, ready to flush),
    written at ``now`` (unix time; the clock's if not given)."""
    written_at = time.time() if now is None else now
    handoff = Handoff(state.shard, shards, state.interval, written_at, epoch, seq, state.closed_through,
                      seq_gaps=state.seq_gaps, gap_metrics=state.gap_metrics, late_metrics=state.late_metrics,
                      metrics=state.metrics)
    overflow = state.overflow_tags
    for index, bucket in state.buckets.items():
        bucket.close(series_metrics=True)
        body = bucket_body(bucket, overflow)
        handoff.buckets[index] = (pack_batch_body(body), bucket.metrics, bucket.covers, bucket.limit.folded)
        handoff.bucket_entry_metrics[index] = body_entry_metrics(body, bucket.series_metrics)
        if bucket.gauge_ttls:
            handoff.bucket_gauge_ttls[index] = bucket.gauge_ttls
    handoff.gauges = [[key, value, seen] for key, (value, seen) in overflow_last(state.gauges.values, overflow)]
    handoff.gauges_folded = state.gauges.limit.folded
    handoff.gauge_expiry = state.gauges.expire_for
    handoff.streams = [[src, epoch_, last, through] for (src, epoch_), (last, through) in state.last_seq.items()]
    return handoff


def bucket_body(bucket: IntervalBucket, overflow: tuple[str, ...]) -> BatchBody:
    """A closed bucket's tables as one batch body, each name's overflow series after its own series,
    so that merging it into an empty bucket admits every series as it was admitted here."""
    body = BatchBody.empty()
    for key, total in overflow_last(bucket.counters, overflow):
        body.counters.extend((key, total))
    for key, (was_set, value) in overflow_last(bucket.gauge_changes, overflow):
        body.gauges.extend((key, was_set, value))
    for mtype, of_type in bucket.sampled.items():
        for key, (packed, count) in overflow_last(of_type, overflow):
            body.sampled.extend((key, mtype, count, b"".join(packed)))
    for key, members in overflow_last(bucket.sets, overflow):
        body.sets.extend((key, sorted(members)))
    for key, total in overflow_last(bucket.traces, overflow):
        body.traces.extend((key, total))
    return body


def body_entry_metrics(body: BatchBody, series_metrics: dict[SeriesKey, int]) -> bytes:
    """The ``entry_metrics`` of a closed bucket's ``body``: each series' metrics with its first entry (a key of
    two types has two), 0 with the others."""
    left = dict(series_metrics)
    return pack_entry_metrics([left.pop(section[i], 0) for section, stride in zip(body, BODY_STRIDES, strict=True)
                               for i in range(0, len(section), stride)])


def overflow_last(table: dict[SeriesKey, Any], overflow: tuple[str, ...]) -> list[tuple[SeriesKey, Any]]:
    return sorted(table.items(), key=lambda item: item[0] == series_key(series_name(item[0]), overflow))


def restore(state: ShardState, handoff: Handoff, shards: int, now: float, max_age_secs: float) -> tuple[int, int]:
    """Continue ``handoff`` in the fresh ``state``; returns the flush stream (epoch, seq) to go on with.

    HandoffRefused when it is not this shard's or is older than ``max_age_secs``.
    """
    if (handoff.shard, handoff.shards, handoff.interval) != (state.shard, shards, state.interval):
        raise HandoffRefused(f"it is shard {handoff.shard} of {handoff.shards} at {handoff.interval:g} s, "
                             f"this is shard {state.shard} of {shards} at {state.interval:g} s")
    age = now - handoff.written_at
    if age > max_age_secs:
        raise HandoffRefused(f"written {age:.0f} s ago, more than {max_age_secs:.0f} s")
    state.closed_through = min(state.closed_through, handoff.closed_through)
    for index, (body, metrics, covers, folded) in sorted(handoff.buckets.items()):
        bucket = state.buckets[index] = state.new_bucket()
        # Each series is admitted here as it was there (overflow series last): nothing folds anew.
        bucket.merge_frame(body, handoff.bucket_entry_metrics.get(index, b""))
        bucket.metrics, bucket.covers, bucket.limit.folded = metrics, covers, folded
        bucket.gauge_ttls = handoff.bucket_gauge_ttls.get(index, {})
    for key, value, seen in handoff.gauges:
        state.gauges.values[state.gauges.limit.admit(key)] = [value, seen]
    state.gauges.limit.folded = handoff.gauges_folded
    state.gauges.expire_for = {key: n for key, n in handoff.gauge_expiry.items() if key in state.gauges.values}
    state.last_seq = {(src, epoch): (last, through) for src, epoch, last, through in handoff.streams}
    state.seq_gaps, state.gap_metrics = handoff.seq_gaps, handoff.gap_metrics
    state.late_metrics, state.metrics = handoff.late_metrics, handoff.metrics
    return handoff.epoch, handoff.seq


def write_handoff(path: Path, handoff: Handoff) -> None:
    """Atomically: the next instance sees the whole file or none."""
    write_private(path, handoff.encode(), durable=True)


def take_handoff(path: Path) -> Handoff | None:
    """The hand-off at ``path``, removed first so that it is merged once at most; None if there is none.

    HandoffRefused when it cannot be read.
    """
    try:
        data = read_private(path)
    except FileNotFoundError:
        return None
    path.unlink()
    return Handoff.decode(data)
