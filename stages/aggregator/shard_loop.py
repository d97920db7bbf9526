"""Aggregator shard K: ``python -m stages.aggregator --shard K --shards N``.

With an ``input: kafka:`` section in the config the shard is a fleet-tier one instead
(:mod:`.fleet_loop`): its input is the edges' partials in Kafka, not the receivers. Otherwise:

Binds PULL ``ipc://<run>/shard-K-of-N.sock`` (the stable end: every receiver connects to it).
Connects PUSH to ``ipc://<run>/forwarder.sock`` and sends one ``pystatsd.flush.v1`` per interval.
Flushes the forwarder cannot take yet, or while it pauses for a restart, wait in a bounded hold queue
(:mod:`.outbox`).
On SIGTERM when this shard is stopped alone (supervisord and the receiver run on: a restart): pause
the receivers (:mod:`stages.rundir.pause`: they hold its batches, so none is in flight when it unbinds),
unbind, drain what already arrived, flush what is due and write the open intervals to the run
directory for the next instance (:mod:`.handoff`), so that each interval is flushed once, whole.
When the pipeline stops, unbind, drain and flush every open interval as ``final`` instead. Hand
every flush on, exit 0.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from pathlib import Path

import zmq

from stages.aggregator.busiest import empty_busiest
from stages.aggregator.gauge_carry import CARRY_WAIT_SECS, next_ring, take_carried, write_carried
from stages.aggregator.handoff import HandoffRefused, capture, handoff_path, restore, take_handoff, write_handoff
from stages.aggregator.outbox import Outbox
from stages.aggregator.partials import PartialSource
from stages.aggregator.shard import FLUSH_GRACE_SECS, ClosedInterval, ShardState, overrun_secs
from stages.common import contract, supervisor_rpc
from stages.common.clock import SYSTEM_CLOCK, Clock
from stages.common.config import Config
from stages.common.figure_schemas import ShardFigures
from stages.common.lifecycle import (
    SHARD_STOP,
    PullWakeups,
    StopSignal,
    reread_config,
)
from stages.common.log_throttle import LogThrottle
from stages.common.partial_bounds import PartialBounds
from stages.common.process_names import AGGREGATOR, process_name
from stages.common.sharding import shard_endpoint
from stages.rundir.figures import publish
from stages.rundir.pause import begin_pause, end_pause, pause_path
from stages.rundir.ring import CHECK_EVERY_SECS, Ring, read_ring, ring_shards
from stages.rundir.top_request import asked_tag_keys

log = logging.getLogger("stages.aggregator")

#: Batches read per wake-up before the loop checks the clock again.
RECV_BURST = 200
#: After taking over, how long the shard waits before flushing an interval that is already due: the
#: receivers reconnect within ZeroMQ's reconnect interval (0.1 s) and hand on the batches they queued
#: for it meanwhile, which belong in that interval.
TAKEOVER_GRACE_SECS = 0.5
#: A stopping shard waits for the ``paused`` batch of every receiver it heard from this recently
#: (one with traffic sends a batch every ``batch_max_age_ms``); the others have nothing on the way.
PAUSE_EXPECT_WITHIN_SECS = 1.0
#: ... and waits at least this long: a receiver may have looked at the pause files just before the
#: file was written, and send one batch more before it looks again.
PAUSE_MIN_SECS = CHECK_EVERY_SECS + 0.1


class ShardLoop:
    def __init__(self, config: Config, shard: int, shards: int, ctx: zmq.Context[zmq.Socket[bytes]],
                 run: os.PathLike[str] | str, config_file: Path, bounds: PartialBounds | None = None,
                 clock: Clock = SYSTEM_CLOCK,
                 stopped_alone: Callable[[Path], bool] = supervisor_rpc.runs_on_without) -> None:
        self.config, self.config_file = config, config_file
        self.clock = clock
        #: Asked at stop whether the pipeline runs on without this shard (a restart): supervisord's
        #: word in a stage process, the test's in one.
        self.stopped_alone = stopped_alone
        #: A reloaded config, and the interval after which it applies (the one open when it came).
        self.reloaded: tuple[Config, int] | None = None
        self.state = ShardState(
            shard, config.flush_interval, config.percentiles, config.expire_after_intervals,
            config.self_metrics_prefix, config.agent.tags, series_limit=config.series_limit_per_name,
            gauges_limit=config.gauges_limit, now=clock.time(), histogram_buckets=config.histogram_buckets)
        self.shard, self.shards = shard, shards
        self.run_dir = Path(run)
        self.epoch = int(clock.time() * 1e9)  # unix time in ns: the instance's start
        self.seq = 0
        self.endpoint = shard_endpoint(run, shard, shards)
        #: receiver → clock.monotonic() of its last batch, and the receivers that sent ``paused`` in a stop
        self.heard: dict[str, float] = {}
        self.paused: set[str] = set()
        # A pause left by an instance killed while it stopped: the receivers must not hold batches for this one.
        end_pause(pause_path(self.run_dir, shard, shards))
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, config.queues.shard_batches)
        self.pull.bind(self.endpoint)
        self.outbox = Outbox(ctx, self.run_dir, config.queues.forwarder_flushes, clock)
        self.decode_errors: collections.Counter[str] = collections.Counter()
        self.fold_log = LogThrottle()
        self.gauge_drop_log = LogThrottle()
        self.handoff_path = handoff_path(self.run_dir, shard, shards)
        #: No interval is flushed before this (unix time): see TAKEOVER_GRACE_SECS.
        self.flush_not_before = 0.0
        #: The ring of a reshard that retires this shard, once the ring file names it.
        self.next_ring: Ring | None = None
        #: Whether this shard, retiring in a reshard, has carried its gauges to the new ring (gauge_carry).
        self.gauges_carried = False
        #: The retiring shards whose gauges this one, new in a reshard, has taken (gauge_carry), and whether
        #: it gave up waiting for the others.
        self.carried_by: set[int] = set()
        self.carry_given_up = False
        # Before the first batch is taken: the last instance's intervals are the ones it merges into.
        self.take_over(config.expire_after_intervals * config.flush_interval)
        if bounds is not None:
            self.state.partials = PartialSource(config.agent.host_name, f"{shard}@{self.epoch}", bounds)

    def take_over(self, max_age_secs: float) -> None:
        """Continue what the last instance handed on, if it did; a refused hand-off is logged and counted."""
        try:
            handoff = take_handoff(self.handoff_path)
            if handoff is None:
                return
            self.epoch, self.seq = restore(self.state, handoff, self.shards, self.clock.time(), max_age_secs)
        except HandoffRefused as exc:
            self.state.stats.add("handoffs_refused", 1)
            log.error("Refused the hand-off in %s: %s; what it held counts as lost", self.handoff_path, exc)
            return
        self.flush_not_before = self.clock.time() + TAKEOVER_GRACE_SECS
        log.info("Took over from the last instance: %d open intervals, %d gauges, flush seq %d",
                 len(handoff.buckets), len(handoff.gauges), self.seq)

    def run(self, stop: StopSignal) -> None:
        wakeups = PullWakeups(self.pull, stop)
        while not stop.requested:
            wait_ms = (max(self.state.next_deadline(), self.flush_not_before) - self.clock.time()) * 1000
            # Held flushes, and the forwarder's pause, are looked at again as often as the pause files.
            if wakeups.wait(min(wait_ms, CHECK_EVERY_SECS * 1000)):
                self.receive_burst()
            if stop.take_reload():
                self.reload()
            self.flush_due()
            self.send_held()
        self.stop()

    def receive_burst(self) -> int:
        received = 0
        now = self.clock.monotonic()
        while received < RECV_BURST:
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            try:
                header, body = contract.decode_batch(frames)
                self.state.add_batch(header, body)
                self.heard[header.src] = now
                if header.paused:
                    self.paused.add(header.src)
                log.debug("Merged a batch from %s: seq %d, %d metrics", header.src, header.seq, header.metrics)
            except contract.DecodeError as exc:
                self.count_bad_message(exc.reason, exc)
            except (TypeError, ValueError, IndexError, AttributeError) as exc:
                # A body of the wrong shape: only a broken or foreign sender on the ipc socket sends one.
                self.count_bad_message("bad_body", exc)
        return received

    def count_bad_message(self, reason: str, exc: Exception) -> None:
        self.decode_errors[reason] += 1
        log.warning("Dropped a message that is not a valid batch (%s: %s); %d so far",
                    reason, exc, sum(self.decode_errors.values()))

    def reload(self) -> None:
        """SIGHUP: the config as it is now, from the next interval on (the open one ends as it began)."""
        config = reread_config(self.config_file, self.config, log)
        if config is not None:
            self.reloaded = (config, self.state.index_of(self.clock.time()))

    def flush_due(self) -> None:
        now = self.clock.time()
        if now < self.flush_not_before:
            return
        if now >= self.state.next_deadline():
            ring = read_ring(self.run_dir)
            adopted, carried_by = take_carried(self.run_dir, self.state.gauges, self.shard, self.shards)
            self.carried_by |= carried_by
            if adopted:
                log.info("Adopted %d gauges from the retired ring", adopted)
                if ring is not None and ring.shards == self.shards:
                    self.state.gauges_taken_over_at = self.state.index_of(ring.since)
            if self.next_ring is None:
                self.next_ring = next_ring(ring, self.shards, self.epoch / 1e9)
                if self.next_ring is not None:
                    self.state.gauges_handed_at = self.state.index_of(self.next_ring.since)
            if self.awaits_carried_gauges(ring, now):
                self.flush_not_before = now + CHECK_EVERY_SECS
                return
            self.state.top_tag_keys = asked_tag_keys(self.run_dir, now)
        closed_now = self.state.due(now)
        for closed in closed_now:
            self.queue_flush(closed, final=False)
            self.report_overrun(closed)
        if closed_now and not self.gauges_carried:
            self.carry_gauges()
        if self.reloaded is not None and self.state.closed_through >= self.reloaded[1]:
            config, self.reloaded = self.reloaded[0], None
            self.state.reconfigure(config.percentiles, config.expire_after_intervals, config.series_limit_per_name,
                                   config.self_metrics_prefix, config.agent.tags, config.gauges_limit,
                                   config.histogram_buckets)
            self.config = config
            log.info("The reloaded config applies from this interval on")
        if closed_now:
            self.send_held()
            self.publish_figures(closed_now[-1])

    def awaits_carried_gauges(self, ring: Ring | None, now: float) -> bool:
        """Whether this shard, new in a reshard (``ring``, the ring file's), holds its ring's first interval
        (now due) for the gauges of a retiring shard that has not carried them yet; at most CARRY_WAIT_SECS
        past its due time."""
        if ring is None or ring.shards != self.shards or ring.previous is None or self.carry_given_up:
            return False
        first = self.state.index_of(ring.since)
        if self.state.closed_through >= first or self.state.index_of(now - FLUSH_GRACE_SECS) <= first:
            return False
        missing = sorted(set(range(ring.previous)) - self.carried_by)
        if not missing:
            return False
        if now < self.state.start_of(first + 1) + FLUSH_GRACE_SECS + CARRY_WAIT_SECS:
            return True
        self.carry_given_up = True
        log.warning("No gauges carried from retiring shard(s) %s of %d within %.0f s: this ring's first interval "
                    "is flushed without them, and they reappear with their next update",
                    ", ".join(map(str, missing)), ring.previous, CARRY_WAIT_SECS)
        return False

    def report_overrun(self, closed: ClosedInterval) -> None:
        """Log and count a flush handed on more than an interval after it was due (see overrun_secs);
        not one of an interval that ended before this instance started (a restart's, late by design)."""
        handed_at = self.clock.time()
        late = overrun_secs(closed, handed_at)
        if late <= 0 or closed.start + closed.interval < self.epoch / 1e9:
            return
        self.state.stats.add("flush_overruns", 1)
        log.warning("The flush of the interval from %s (%s s) overran its interval by %.2f s (built in %.0f ms, "
                    "%d aggregates): this shard is falling behind; fewer live series (gauges_limit, "
                    "series_limit_per_name), more shards or a longer flush_interval help", closed.start,
                    closed.interval, late, closed.flush_ms, closed.count)

    def carry_gauges(self) -> None:
        """Once this shard, retiring in a reshard, flushed the last interval before the switch: its gauges
        to the new ring's shards, which report them from then on."""
        ring = self.next_ring
        if ring is None or self.state.closed_through < self.state.index_of(ring.since) - 1:
            return
        self.gauges_carried = True
        shards = ring.shards
        try:
            carried = write_carried(self.run_dir, self.state.gauges, self.shard, self.shards, shards)
        except OSError as exc:
            log.error("Cannot carry the gauges to the new ring (%s): they reappear with their next update",
                      exc.strerror)
            return
        self.state.gauges.values.clear()
        log.info("Carried %d gauges to the ring of %d shards", carried, shards)

    def publish_figures(self, closed: ClosedInterval) -> None:
        publish(self.run_dir, process_name(AGGREGATOR, self.shard), "aggregator", self.figures(closed))

    def figures(self, closed: ClosedInterval) -> ShardFigures:
        return {
            "shard": self.shard, "aggregates": closed.count, "metrics": self.state.metrics,
            "gauges": len(self.state.gauges.values), "held_flushes": len(self.outbox),
            "dropped_flushes": self.outbox.dropped, "bad_messages": dict(self.decode_errors),
            "busiest": closed.busiest or empty_busiest(self.state.interval, self.state.series_limit)}

    def queue_flush(self, closed: ClosedInterval, final: bool) -> None:
        for src, batches in closed.seq_gaps.items():
            log.error("Lost %d metrics (%d batches from %s) on the way to this shard",
                      closed.gap_metrics.get(src, 0), batches, src)
        if closed.folded and self.fold_log.ready():
            worst = max(closed.folded, key=closed.folded.__getitem__)
            log.warning("series_limit_per_name (%d) reached for %d names, e.g. %r: %d series folded into its "
                        "overflow series", self.state.series_limit, len(closed.folded), worst, closed.folded[worst])
        if closed.dropped_gauges and self.gauge_drop_log.ready():
            log.warning("gauges_limit (%d) reached: dropped %d new gauges in the interval from %s (the %d live "
                        "ones are kept)", self.state.gauges.max_live, closed.dropped_gauges, closed.start,
                        len(self.state.gauges.values))
        header = contract.FlushHeader(
            shard=self.shard, shards=self.shards, epoch=self.epoch, seq=self.seq,
            interval_start=closed.start, interval=closed.interval, n=closed.count,
            final=final, seq_gaps=closed.seq_gaps, covers=closed.covers)
        log.debug("Flushed the interval from %s (%s s): %d aggregates%s, seq %d, built in %.1f ms", closed.start,
                  closed.interval, closed.count, ", final" if final else "", self.seq, closed.flush_ms)
        self.seq += 1
        self.outbox.put(contract.encode_flush(header, closed.body, closed.partials))

    def hand_off(self) -> bool:
        """Write the open intervals for the next instance (supervisord restarts this shard alone); False
        when that failed, and the caller flushes them after all (capture leaves the state whole)."""
        handoff = capture(self.state, self.shards, self.epoch, self.seq, self.clock.time())
        try:
            write_handoff(self.handoff_path, handoff)
        except OSError as exc:
            log.error("Cannot write the hand-off %s (%s): flushing the open intervals instead", self.handoff_path,
                      exc.strerror)
            return False
        log.info("Handed %d open intervals on to the next instance (%s)", len(handoff.buckets), self.handoff_path)
        return True

    def send_held(self) -> None:
        self.outbox.send(contract.FlushHeader(
            shard=self.shard, shards=self.shards, epoch=self.epoch, seq=self.seq, interval_start=0.0,
            interval=self.state.interval, n=0, paused=True))

    def pause_receivers(self) -> None:
        """Until every receiver heard from lately holds this shard's batches (each sent ``paused`` last),
        merging what comes meanwhile; at most SHARD_STOP.pause_max_secs."""
        try:
            begin_pause(pause_path(self.run_dir, self.shard, self.shards), SHARD_STOP.hold_secs)
        except OSError as exc:
            log.error("Cannot write the pause for the receivers (%s): batches on the way when this shard "
                      "unbinds may be lost (counted)", exc.strerror)
            return
        started = self.clock.monotonic()
        expected = {src for src, seen in self.heard.items() if started - seen < PAUSE_EXPECT_WITHIN_SECS}
        deadline = started + SHARD_STOP.pause_max_secs
        while (now := self.clock.monotonic()) < deadline and (now - started < PAUSE_MIN_SECS or expected - self.paused):
            if self.pull.poll(max(1, int(min(deadline - now, 0.05) * 1000))):
                self.receive_burst()
            self.flush_due()
        missing = expected - self.paused
        if missing:
            log.warning("No pause from %s within %.1f s: what it had on the way when this shard unbinds may be lost "
                        "(counted by the next instance)", ", ".join(sorted(missing)), SHARD_STOP.pause_max_secs)
        log.info("Receivers paused in %.2f s (%d of %d heard from lately)", self.clock.monotonic() - started,
                 len(expected & self.paused), len(expected))

    def stop(self) -> None:
        # Retired by a reshard: the next instance of this shard number is another ring's.
        retiring = ring_shards(self.run_dir, self.shards, self.clock.time()) != self.shards
        restarting = not retiring and self.stopped_alone(self.run_dir)
        if restarting:
            self.pause_receivers()
        log.info("Stopping: draining batches")
        self.pull.unbind(self.endpoint)
        while self.pull.poll(int(SHARD_STOP.drain_quiet_secs * 1000)):
            self.receive_burst()
        self.flush_due()
        if not restarting or not self.hand_off():
            closed = self.state.close_all(retiring)
            log.info("Flushing every open interval (%d)%s", len(closed), ": retired by a reshard" if retiring else "")
            for i, interval in enumerate(closed):
                self.queue_flush(interval, final=i == len(closed) - 1)
        # Both waits count in lifecycle.ShardStop.budget_secs: this one, then the linger at ctx.term().
        deadline = self.clock.monotonic() + SHARD_STOP.linger_ms / 1000
        while self.outbox and self.clock.monotonic() < deadline:
            self.outbox.send_all()
            if self.outbox:
                self.outbox.wait_for_room(50)
        if self.outbox:
            log.error("Forwarder unreachable at stop: %d flushes not delivered", len(self.outbox))
        self.pull.close(linger=0)
        if restarting:
            # Closed: what the receivers send now waits in their queues for the next instance.
            end_pause(pause_path(self.run_dir, self.shard, self.shards))
        self.outbox.close(SHARD_STOP.linger_ms)
