"""A fleet-tier shard: the edges' partials from a Kafka consumer group in, fleet aggregates out.

Started in place of :class:`stages.aggregator.shard_loop.ShardLoop` when the config has an
``input: kafka:`` section (``pystatsd run`` then starts no receiver). Kafka assigns this process
its partitions; every series lands in one partition (the edges key partials by series), so the
partitions' buckets never share a series and an interval's flush is their union. What makes it
exact under failure:

- **Intervals close per partition** once the clock passes their end plus ``lateness_seconds``, and
  only once the partition is caught up (read to the end it had when it was assigned): a process
  that takes over a partition first re-reads what its last owner had not delivered.
- **Offsets are committed only once every sink is done with the flush** (the forwarder says so in
  :mod:`stages.rundir.delivery`), and only up to the first record of an interval still open. The commit
  carries, as its metadata, the last interval delivered and the position then: the next owner skips
  what was delivered and takes as late what came after it. A crash, a ``kill -9`` or a rebalance
  therefore re-reads rather than loses; a flush sent again has the same aggregates and ids.
- **Late partials** (for an interval already flushed) are counted by host and, with ``late:
  merge``, merged into the interval (kept ``late_max_seconds``), whose touched series go out again
  as a correction (``revision`` 1, 2, ...: another ``pystatsd-id``); with ``late: drop``, dropped.
- A **partial seen twice** (an edge that re-sent a flush) is merged once and counted.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from stages.aggregator.fleet.bucket import FleetBucket
from stages.aggregator.histogram_bounds import BucketBounds
from stages.common import contract
from stages.common.config import Config, KafkaInputConfig
from stages.common.figure_schemas import FleetFigures
from stages.common.intervals import interval_index, interval_start
from stages.common.lifecycle import StopSignal
from stages.common.log_throttle import LogThrottle
from stages.common.process_names import AGGREGATOR, process_name
from stages.common.selfstats import SelfStats
from stages.common.sharding import forwarder_endpoint
from stages.rundir.delivery import read_delivered
from stages.rundir.figures import publish

log = logging.getLogger("stages.aggregator.fleet")

#: Records taken per poll; the loop checks the clock between polls.
POLL_RECORDS = 5000
#: Longest wait in one poll: deliveries and deadlines are looked at this often.
POLL_MS = 200
#: A group join not done in this long is given up and made again (unstick_join): the broker's rebalance
#: waits for members within their session (6 s), and these poll every POLL_MS.
JOIN_STUCK_SECS = 30.0
#: A partition assigned is read for at most this long before its intervals may close anyway.
CATCH_UP_MAX_SECS = 30.0
#: Longest wait for the broker to say where a partition without a commit has partials of open intervals.
OFFSET_LOOKUP_MS = 5000
#: How long a stop waits for the sinks to take what was flushed, so that it is committed.
STOP_WAIT_SECS = 5.0
#: Corrections of late partials go out at most this often.
CORRECTION_EVERY_SECS = 1.0
#: Hosts listed as gone once missing from the newest interval after being seen within this many.
HOSTS_WINDOW = 6


@dataclass
class PartitionState:
    """What this process knows of one partition it owns (a new object at each assignment)."""

    partition: int
    #: every interval up to this one is flushed for this partition
    closed: int
    #: from the commit: the last interval delivered and the position then (records before it, of an
    #: interval up to ``through``, were delivered by the last owner)
    through: int | None = None
    delivered_before: int = 0
    #: catching up: the end offset it had when assigned, and since when (monotonic)
    catch_up_to: int = 0
    assigned_at: float = 0.0
    caught_up: bool = False
    #: the next offset to read
    position: int | None = None
    #: open interval → first offset of its partials; closed interval → first offset of late partials not yet flushed
    first_offset: dict[int, int] = field(default_factory=dict)
    late_first_offset: dict[int, int] = field(default_factory=dict)

    def commit_point(self) -> int | None:
        """Where a re-read must start for nothing unflushed to be lost; None before a record was read."""
        if self.position is None:
            return None
        return min([self.position, *self.first_offset.values(), *self.late_first_offset.values()])


@dataclass
class KeptInterval:
    """A flushed interval of one partition, kept for late partials (``late: merge``)."""

    bucket: FleetBucket
    closed_at: float


@dataclass
class PendingFlush:
    seq: int
    frames: list[bytes]
    #: the forwarder it was sent to (None: not sent yet)
    forwarder: str | None = None
    sent: bool = False
    #: partition state → (offset, metadata) to commit once this flush and every one before it are done
    commit: list[tuple[PartitionState, int, str]] = field(default_factory=list)


class FleetLoop:
    def __init__(self, config: Config, shard: int, shards: int, ctx: zmq.Context[zmq.Socket[bytes]],
                 run: os.PathLike[str] | str) -> None:
        fleet = config.fleet_input
        assert fleet is not None
        self.config, self.fleet = config, fleet
        #: The bounds each timer-like is counted into (``histogram_buckets``).
        self.bounds = BucketBounds(config.histogram_buckets)
        self.shard, self.shards = shard, shards
        self.run_dir = Path(run)
        self.interval = config.flush_interval
        self.epoch = time.time_ns()
        self.seq = 0
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, config.queues.forwarder_flushes)
        self.push.connect(forwarder_endpoint(run))
        self.parts: dict[int, PartitionState] = {}
        #: (partition, interval) → its bucket, open or kept
        self.open: dict[tuple[int, int], FleetBucket] = {}
        self.kept: dict[tuple[int, int], KeptInterval] = {}
        #: interval → corrections sent of it
        self.revisions: collections.Counter[int] = collections.Counter()
        self.pending: collections.deque[PendingFlush] = collections.deque()
        self.stats = SelfStats(config.self_metrics_prefix, "fleet", {"shard": str(shard)}, config.agent.tags)
        self.late_by_host: collections.Counter[str] = collections.Counter()
        #: late partials dropped (late: drop, or past late_max_seconds)
        self.late_dropped = 0
        #: partials re-read after a take-over that the last owner had delivered
        self.redelivered_skipped = 0
        self.bad_partials: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self.partials = 0
        self.intervals_closed = 0
        self.last_flushed: int | None = None
        #: interval → hosts seen in it (the newest few)
        self.hosts: dict[int, set[str]] = {}
        self.next_correction = 0.0
        self.next_figures = 0.0
        self.bad_log = LogThrottle()
        #: partitions assigned in the last poll, not taken up yet
        self.newly_assigned: list[Any] = []
        #: monotonic time a group join began (eager rebalances revoke first), None once it assigned
        self.joining_since: float | None = None
        self.consumer = self._consumer(fleet)

    def _consumer(self, fleet: KafkaInputConfig) -> Any:
        from kafka import ConsumerRebalanceListener, KafkaConsumer
        from kafka.errors import KafkaError

        loop = self
        fleet.warn_insecure(log)

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no types
            def on_partitions_revoked(self, revoked: Any) -> None:
                loop.joining_since = time.monotonic()
                loop.revoke([tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                # Taken up after the poll returns: the consumer's own calls are not for its callbacks.
                loop.joining_since = None
                loop.newly_assigned.extend(assigned)

        consumer = KafkaConsumer(
            bootstrap_servers=fleet.brokers, group_id=fleet.group, client_id=f"{fleet.client_id}-{self.shard}",
            enable_auto_commit=False, auto_offset_reset="latest", max_poll_records=POLL_RECORDS,
            # A process killed (kill -9) is noticed within this; the broker's least is 6 s.
            session_timeout_ms=6000, heartbeat_interval_ms=2000, reconnect_backoff_max_ms=2000,
            **fleet.security_settings())
        # The topic's partitions known before the first join: a join without them assigns nothing and
        # rejoins at once, and kafka-python 3.0 was seen to hang in that second join, never heartbeating.
        try:
            if not consumer.partitions_for_topic(fleet.kafka_topic):
                log.warning("Topic %s has no partitions yet (not created?): waiting for it", fleet.kafka_topic)
        except KafkaError as exc:
            log.warning("Cannot read the metadata of topic %s yet (%s): joining the group anyway",
                        fleet.kafka_topic, exc)
        consumer.subscribe([fleet.kafka_topic], listener=Listener())
        return consumer

    # -- partitions ---------------------------------------------------------------------------------

    def index_of(self, ts: float) -> int:
        return interval_index(ts, self.interval)

    def revoke(self, partitions: list[int]) -> None:
        """Another process owns them now and re-reads them from the last commit: forget them here."""
        self.newly_assigned = [tp for tp in self.newly_assigned if tp.partition not in partitions]
        for partition in partitions:
            self.parts.pop(partition, None)
        for table in (self.open, self.kept):
            for key in [key for key in table if key[0] in partitions]:
                del table[key]
        log.info("Partitions %s revoked: their open intervals are re-read by their next owner", partitions)

    def assign(self, assigned: list[Any]) -> None:
        from kafka.errors import KafkaError

        now_closed = self.index_of(time.time() - self.fleet.lateness_seconds) - 1
        try:
            ends = self.consumer.end_offsets(assigned)
        except KafkaError as exc:
            log.warning("Cannot read the end offsets of %s (%s): intervals close after %.0f s", assigned, exc,
                        CATCH_UP_MAX_SECS)
            ends = {}
        starts: dict[Any, int | None] = {}
        for tp in assigned:
            state = PartitionState(tp.partition, now_closed, assigned_at=time.monotonic(),
                                   catch_up_to=int(ends.get(tp, 0) or 0))
            try:
                committed = self.consumer.committed(tp, metadata=True)
            except KafkaError as exc:
                log.warning("Cannot read the commit of partition %d: %s", tp.partition, exc)
                committed = None
            if committed is not None and committed.metadata:
                try:
                    meta = json.loads(committed.metadata)
                    state.through, state.delivered_before = int(meta["through"]), int(meta["position"])
                    state.closed = state.through
                except (ValueError, KeyError, TypeError):
                    log.warning("Partition %d: commit metadata %r is not pystatsd's", tp.partition,
                                committed.metadata)
            self.parts[tp.partition] = state
            starts[tp] = None if committed is None or committed.offset < 0 else committed.offset
        self.seek_starts(starts, now_closed)
        log.info("Partitions %s assigned (topic %s, group %s)", sorted(tp.partition for tp in assigned),
                 self.fleet.kafka_topic, self.fleet.group)

    def seek_starts(self, starts: dict[Any, int | None], now_closed: int) -> None:
        """Each partition read from its commit, or without one from the first partial of an interval not
        closed. Always a seek: a partition an eager rebalance gives back to this process keeps
        kafka-python's position, past the partials of the intervals that ``revoke`` forgot."""
        from kafka.errors import KafkaError

        uncommitted = [tp for tp, start in starts.items() if start is None]
        found: dict[Any, Any] = {}
        if uncommitted:
            # An edge stamps a partial when it sends it, after its interval ended by the same clock: none
            # of an interval still open is older than the first open interval's end.
            since_ms = int(self.end_of(now_closed + 1) * 1000)
            try:
                found = self.consumer.offsets_for_times({tp: since_ms for tp in uncommitted},
                                                        timeout_ms=OFFSET_LOOKUP_MS)
            except KafkaError as exc:
                log.warning("Cannot look up where partitions %s have partials of open intervals (%s): read from "
                            "where the consumer is (their end if new here)",
                            sorted(tp.partition for tp in uncommitted), exc)
        for tp, start in starts.items():
            state = self.parts[tp.partition]
            if start is not None:
                since = "its commit"
            elif found.get(tp) is not None:
                start, since = found[tp].offset, "the first partial of an open interval (no commit yet)"
            elif tp in found:
                start, since = None, "no commit yet, no partial of an open interval"
            else:
                continue
            try:
                if start is None:
                    self.consumer.seek_to_end(tp)
                else:
                    self.consumer.seek(tp, start)
            except ValueError as exc:  # no longer assigned: a rebalance under way
                log.warning("Partition %d: cannot seek to %s (%s)", tp.partition, since, exc)
                continue
            where = "its end" if start is None else f"offset {start}"
            log.info("Partition %d: read from %s, %s%s", tp.partition, where, since,
                     "" if state.through is None else
                     f", after the interval at {self.end_of(state.through) - self.interval:g} "
                     f"(delivered through offset {state.delivered_before})")

    # -- the loop -----------------------------------------------------------------------------------

    def run(self, stop: StopSignal) -> None:
        from kafka.errors import KafkaError

        while not stop.requested:
            try:
                polled = self.consumer.poll(timeout_ms=POLL_MS, max_records=POLL_RECORDS)
            except KafkaError as exc:
                log.error("Kafka: %s; retrying", exc)
                time.sleep(1)
                polled = {}
            sought: set[int] = set()
            self.unstick_join()
            if self.newly_assigned:
                assigned, self.newly_assigned = self.newly_assigned, []
                self.assign(assigned)
                sought = {tp.partition for tp in assigned}
            for tp, records in polled.items():
                state = self.parts.get(tp.partition)
                # Records of a partition just sought to its start were fetched before the seek: read again.
                if state is not None and tp.partition not in sought:
                    for record in records:
                        self.take(state, record.offset, record.value)
            stop.take_reload()  # a reload applies at the next start: the fleet tier takes nothing live yet
            self.check_caught_up()
            self.close_due(time.time())
            self.send_corrections()
            self.settle()
            if time.monotonic() >= self.next_figures:
                self.publish_figures()
        self.stop()

    def unstick_join(self) -> None:
        """A join that never completes gets a new consumer: kafka-python 3.0 was seen to stop in a second
        join right after a first one, never heartbeating again, the process owning nothing for good."""
        if self.joining_since is None or time.monotonic() - self.joining_since < JOIN_STUCK_SECS:
            return
        from kafka.errors import KafkaError

        log.error("Joining group %s has not completed in %.0f s: joining again with a new consumer",
                  self.fleet.group, JOIN_STUCK_SECS)
        self.joining_since = time.monotonic()
        try:
            consumer = self._consumer(self.fleet)
        except KafkaError as exc:  # the broker away: the next try in JOIN_STUCK_SECS
            log.error("Cannot make a new consumer (%s): trying again in %.0f s", exc, JOIN_STUCK_SECS)
            return
        self.revoke(list(self.parts))
        with contextlib.suppress(Exception):  # whatever state it is stuck in, this consumer is done with
            self.consumer.close(autocommit=False)
        self.consumer = consumer

    def take(self, state: PartitionState, offset: int, value: bytes) -> None:
        state.position = offset + 1
        try:
            header, body = contract.decode_partial(value)
        except contract.DecodeError as exc:
            self.count_bad(exc.reason, exc)
            return
        if abs(header.interval - self.interval) > 1e-6:
            self.count_bad("other_interval", ValueError(f"a partial of a {header.interval:g} s interval, this fleet "
                                                        f"tier's flush_interval is {self.interval:g} s"))
            return
        index = self.index_of(header.interval_start)
        try:
            if index > state.closed:
                bucket = self.open.get((state.partition, index))
                if bucket is None:
                    bucket = self.open[(state.partition, index)] = FleetBucket()
                    state.first_offset[index] = offset
                self.count_merge(bucket.merge(header, body))
                return
            if state.through is not None and index <= state.through and offset < state.delivered_before:
                self.redelivered_skipped += 1  # delivered by the last owner before it went
                return
            self.take_late(state, index, offset, header, body)
        except ValueError as exc:
            self.count_bad("bad_partial", exc)

    def count_merge(self, merged: bool) -> bool:
        """Count a merge (a partial seen before counts as a duplicate); returns ``merged``."""
        if merged:
            self.partials += 1
        else:
            self.duplicates += 1
        return merged

    def take_late(self, state: PartitionState, index: int, offset: int, header: contract.PartialHeader,
                  body: contract.BatchBody) -> None:
        self.late_by_host[header.host] += 1
        kept = self.kept.get((state.partition, index))
        if self.fleet.late == "drop" or kept is None:
            self.late_dropped += 1
            if self.bad_log.ready():
                log.warning("Dropped a late partial from %s for the interval at %s (%s); %d late in all",
                            header.host, header.interval_start,
                            "late: drop" if self.fleet.late == "drop" else "older than late_max_seconds",
                            sum(self.late_by_host.values()))
            return
        if self.count_merge(kept.bucket.merge(header, body)):
            state.late_first_offset.setdefault(index, offset)

    def count_bad(self, reason: str, exc: Exception) -> None:
        self.bad_partials[reason] += 1
        if self.bad_log.ready():
            log.warning("Dropped a record that is not a partial of this fleet (%s: %s); %d so far", reason, exc,
                        sum(self.bad_partials.values()))

    def check_caught_up(self) -> None:
        now = time.monotonic()
        for state in self.parts.values():
            if not state.caught_up and ((state.position or 0) >= state.catch_up_to
                                        or now - state.assigned_at > CATCH_UP_MAX_SECS):
                state.caught_up = True

    # -- flushing -----------------------------------------------------------------------------------

    def close_due(self, now: float) -> None:
        due = self.index_of(now - self.fleet.lateness_seconds) - 1
        closing: dict[int, list[FleetBucket]] = {}
        for state in self.parts.values():
            if not state.caught_up:
                continue
            while state.closed < due:
                state.closed += 1
                index = state.closed
                bucket = self.open.pop((state.partition, index), None) or FleetBucket()
                state.first_offset.pop(index, None)
                closing.setdefault(index, []).append(bucket)
                if self.fleet.late == "merge":
                    bucket.take_touched()
                    self.kept[(state.partition, index)] = KeptInterval(bucket, now)
        # One with late partials not yet sent as a correction stays until it was (send_corrections).
        for key in [key for key, kept in self.kept.items()
                    if now - kept.closed_at > self.fleet.late_max_seconds and not kept.bucket.touched]:
            del self.kept[key]
        for index in sorted(closing):
            buckets = closing[index]
            aggregates: list[dict[str, Any]] = []
            hosts: set[str] = set()
            for bucket in buckets:
                aggregates.extend(bucket.aggregates(self.end_of(index), self.interval, self.config.percentiles,
                                                    bounds=self.bounds))
                hosts.update(bucket.hosts)
            self.hosts[index] = hosts
            for old in sorted(self.hosts)[:-HOSTS_WINDOW]:
                del self.hosts[old]
            self.intervals_closed += 1
            self.last_flushed = max(index, self.last_flushed or index)
            aggregates.extend(self.self_metrics(index, len(aggregates), hosts))
            self.queue_flush(index, aggregates, revision=0)
        if closing:
            self.snapshot_commit()

    def end_of(self, index: int) -> float:
        return interval_start(index + 1, self.interval)

    def send_corrections(self) -> None:
        now = time.monotonic()
        if now < self.next_correction:
            return
        self.next_correction = now + CORRECTION_EVERY_SECS
        by_index: dict[int, list[dict[str, Any]]] = {}
        for (_, index), kept in self.kept.items():
            touched = kept.bucket.take_touched()
            if touched:
                by_index.setdefault(index, []).extend(
                    kept.bucket.aggregates(self.end_of(index), self.interval, self.config.percentiles, only=touched,
                                           bounds=self.bounds))
        for index in sorted(by_index):
            self.revisions[index] += 1
            log.info("Correction %d of the interval at %s: %d aggregates with late partials merged in",
                     self.revisions[index], self.end_of(index) - self.interval, len(by_index[index]))
            self.queue_flush(index, by_index[index], revision=self.revisions[index])
        for state in self.parts.values():
            state.late_first_offset.clear()
        if by_index:
            self.snapshot_commit()

    def queue_flush(self, index: int, aggregates: list[dict[str, Any]], revision: int) -> None:
        header = contract.FlushHeader(
            shard=self.shard, shards=self.shards, epoch=self.epoch, seq=self.seq,
            interval_start=interval_start(index, self.interval), interval=self.interval, n=len(aggregates),
            ack=True, revision=revision)
        self.pending.append(PendingFlush(self.seq, contract.encode_flush(header, aggregates)))
        self.seq += 1

    def snapshot_commit(self) -> None:
        """What the newest flush, once delivered with all before it, lets this process commit."""
        if not self.pending:
            return
        flush = self.pending[-1]
        for state in self.parts.values():
            point = state.commit_point()
            if point is not None:
                meta = json.dumps({"through": state.closed, "position": state.position})
                flush.commit.append((state, point, meta))

    def settle(self) -> None:
        """Send what waits, commit what every sink is done with, send again what a new forwarder lost."""
        delivered = read_delivered(self.run_dir, self.shard)
        for flush in self.pending:
            if not flush.sent or (delivered is not None and flush.forwarder != delivered.forwarder
                                  and not self.is_done(flush, delivered)):
                try:
                    self.push.send_multipart(flush.frames, zmq.NOBLOCK)
                except zmq.Again:
                    break
                if flush.sent:
                    log.warning("The forwarder restarted before its sinks took flush %d: sent again", flush.seq)
                flush.sent, flush.forwarder = True, delivered.forwarder if delivered is not None else None
        while self.pending and delivered is not None and self.is_done(self.pending[0], delivered):
            self.commit(self.pending.popleft())

    def is_done(self, flush: PendingFlush, delivered: Any) -> bool:
        return bool(delivered.epoch == self.epoch and flush.seq in delivered.seqs)

    def commit(self, flush: PendingFlush) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        # Only partitions owned since the snapshot: another owner's commits are its own.
        offsets = {TopicPartition(self.fleet.kafka_topic, state.partition): OffsetAndMetadata(point, meta, -1)
                   for state, point, meta in flush.commit if self.parts.get(state.partition) is state}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The group moved on: the partitions' next owner re-reads from the last commit (the same ids).
            log.warning("Commit after flush %d refused (%s): its partitions are re-read by their next owner",
                        flush.seq, exc)

    # -- figures ------------------------------------------------------------------------------------

    def self_metrics(self, index: int, aggregates: int, hosts: set[str]) -> list[dict[str, Any]]:
        stats = self.stats
        if not stats.enabled:
            return []
        stats.gauge("hosts", len(hosts))
        stats.gauge("aggregates", aggregates)
        stats.total("partials", self.partials)
        stats.total("duplicate_partials", self.duplicates)
        for host, late in self.late_by_host.items():
            stats.total("late_partials", late, {"host": host})
        stats.total("late_dropped", self.late_dropped)
        for reason, n in self.bad_partials.items():
            stats.total("bad_partials", n, {"reason": reason})
        return stats.aggregates(self.end_of(index), self.interval)

    def lag(self) -> dict[int, int]:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        tps = [TopicPartition(self.fleet.kafka_topic, p) for p in self.parts]
        try:
            ends = self.consumer.end_offsets(tps) if tps else {}
        except KafkaError:
            return {}
        return {tp.partition: max(0, int(end) - int(self.consumer.position(tp))) for tp, end in ends.items()}

    def publish_figures(self) -> None:
        self.next_figures = time.monotonic() + min(self.interval, 2.0)
        publish(self.run_dir, process_name(AGGREGATOR, self.shard), "fleet", self.figures(self.lag()))

    def figures(self, lag: dict[int, int]) -> FleetFigures:
        newest = max(self.hosts) if self.hosts else None
        recent = set().union(*self.hosts.values()) if self.hosts else set()
        current = self.hosts.get(newest, set()) if newest is not None else set()
        return {
            "shard": self.shard, "input": "kafka", "topic": self.fleet.kafka_topic, "group": self.fleet.group,
            "partitions": sorted(self.parts), "lag": sum(lag.values()),
            "lag_by_partition": {str(partition): n for partition, n in lag.items()},
            "open_intervals": len({index for _, index in self.open}), "intervals_closed": self.intervals_closed,
            "last_interval": None if newest is None else interval_start(newest, self.interval),
            "hosts": sorted(current), "hosts_gone": sorted(recent - current),
            "hosts_per_interval": {str(interval_start(index, self.interval)): len(h)
                                   for index, h in sorted(self.hosts.items())},
            "partials": self.partials, "duplicate_partials": self.duplicates,
            "late_partials": dict(self.late_by_host), "late_dropped": self.late_dropped,
            "redelivered_skipped": self.redelivered_skipped,
            "bad_partials": dict(self.bad_partials), "waiting_delivery": len(self.pending)}

    def stop(self) -> None:
        """Open intervals are not flushed: their partitions' next owner re-reads them from the last commit."""
        deadline = time.monotonic() + STOP_WAIT_SECS
        while self.pending and time.monotonic() < deadline:
            self.settle()
            if self.pending:
                time.sleep(0.1)
        if self.pending:
            log.warning("Stopping with %d flushes the sinks have not confirmed: their partials are re-read by "
                        "the next owner (the same ids)", len(self.pending))
        log.info("Stopping: leaving the group; %d open intervals are re-read by the partitions' next owner",
                 len({index for _, index in self.open}))
        self.consumer.close(autocommit=False)
        self.push.setsockopt(zmq.LINGER, 1000)
        self.push.close()
