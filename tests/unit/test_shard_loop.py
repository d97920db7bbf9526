"""A shard's loop in-process: real ZeroMQ sockets in a temporary run directory, a clock the test moves.

The test plays the receiver (a PUSH connected to the shard's endpoint, sending batches as
:func:`stages.common.contract.encode_batch` makes them) and the forwarder (a PULL bound where the
shard's outbox connects), and calls the loop's steps instead of ``run()``: what a whole pipeline
would need supervisord and the wall clock for, one interval edge at a time.

Intervals are 10 s; the clock starts at 1000 s into an interval grid, so interval [T0, T0+10) is the
open one (its flush is due at T0 + 10 + FLUSH_GRACE_SECS).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from harness.wait import wait_for
from stages.aggregator.gauge_carry import CARRY_WAIT_SECS, write_carried
from stages.aggregator.handoff import handoff_path
from stages.aggregator.series import Gauges, SeriesLimit
from stages.aggregator.shard import FLUSH_GRACE_SECS
from stages.aggregator.shard_loop import PAUSE_MIN_SECS, TAKEOVER_GRACE_SECS, ShardLoop
from stages.common import contract
from stages.common.config import Config, load_config
from stages.common.intervals import interval_index
from stages.common.model import MetricType
from stages.common.sharding import forwarder_endpoint, shard_endpoint, shard_for
from stages.rundir.pause import begin_pause, end_pause, forwarder_pause_path, pause_path
from stages.rundir.ring import CHECK_EVERY_SECS, Ring, write_ring
from tests.fake_clock import FakeClock
from tests.unit.bodies import one_body

C, MS, G = int(MetricType.COUNTER), int(MetricType.TIMER), int(MetricType.GAUGE)
INTERVAL = 10.0
#: The start of the interval open when each test begins (a multiple of INTERVAL).
T0 = 1_700_000_000.0
EDGE = T0 + INTERVAL + FLUSH_GRACE_SECS
SHARDS = 2
#: How long the forwarder waits for a flush that should come (none that should not is waited for).
ARRIVES_MS = 2000
#: ... and how long the next of several sent at once may take, once the first is there.
NEXT_ARRIVES_MS = 300


class Wire:
    """One shard's run directory and the sockets around it: the receiver's and the forwarder's ends."""

    def __init__(self) -> None:
        # A short path: ipc socket paths are bounded (stages.common.sharding.MAX_IPC_PATH).
        self.run = Path(tempfile.mkdtemp(prefix="psl"))
        self.config_file = self.run / "pystatsd.yaml"
        self.config_file.write_text(f"flush_interval: {INTERVAL}\n")
        self.config = Config(flush_interval=INTERVAL)
        self.clock = FakeClock(T0)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.forwarder = self.ctx.socket(zmq.PULL)
        self.forwarder.bind(forwarder_endpoint(self.run))
        self.receiver = self.ctx.socket(zmq.PUSH)
        # Connected once, as a receiver is: it reconnects to each instance of the shard by itself.
        self.receiver.connect(shard_endpoint(self.run, 0, SHARDS))
        self.loops: list[ShardLoop] = []
        self.seq = 0
        self.sent_before = 0

    def shard(self, stopped_alone: bool = False) -> ShardLoop:
        """A ShardLoop of shard 0 in this run directory, as a stage process starts one."""
        loop = ShardLoop(self.config, 0, SHARDS, self.ctx, self.run, self.config_file, clock=self.clock,
                         stopped_alone=lambda run: stopped_alone)
        self.loops.append(loop)
        return loop

    def push(self, samples: list[tuple[Any, ...]], ts: float | None = None, seq: int | None = None,
             paused: bool = False, gauge_ttls: dict[str, float] | None = None) -> None:
        """One batch of ``samples`` read at ``ts`` (now if not given), the next in the receiver's sequence."""
        self.seq = self.seq if seq is None else seq
        header = contract.BatchHeader(src="receiver", epoch=1, seq=self.seq,
                                      ts=self.clock.time() if ts is None else ts, n=len(samples),
                                      sent_before=self.sent_before, paused=paused, gauge_ttls=gauge_ttls or {})
        self.seq += 1
        self.sent_before += len(samples)
        self.receiver.send_multipart(contract.encode_batch(header, one_body(samples)))

    def send(self, loop: ShardLoop, samples: list[tuple[Any, ...]], ts: float | None = None,
             seq: int | None = None, gauge_ttls: dict[str, float] | None = None) -> None:
        """:meth:`push`, and the loop merges the batch before this returns."""
        self.push(samples, ts, seq, gauge_ttls=gauge_ttls)
        assert loop.pull.poll(ARRIVES_MS), "the batch did not arrive"
        assert loop.receive_burst() == 1

    def flushes(self) -> list[tuple[contract.FlushHeader, list[dict[str, Any]]]]:
        """Every flush the forwarder gets: the loop's step has handed them to ZeroMQ when it returns, but
        its I/O thread delivers them a moment later (after a reconnect, later still), so each is awaited."""
        got = []
        while self.forwarder.poll(NEXT_ARRIVES_MS if got else ARRIVES_MS):
            frames = self.forwarder.recv_multipart()
            got.append((contract.decode_flush_header(frames), contract.decode_flush_body(frames)))
        return got

    def close(self) -> None:
        for loop in self.loops:  # those a test did not stop
            loop.pull.close(linger=0)
            if not loop.outbox.push.closed:
                loop.outbox.close(0)
        self.receiver.close(linger=0)
        self.forwarder.close(linger=0)
        self.ctx.term()
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture
def wire() -> Iterator[Wire]:
    wire = Wire()
    yield wire
    wire.close()


def hits(value: float, name: str = "hits") -> tuple[Any, ...]:
    return (name, C, value, 1.0, ())


def took(value: float) -> tuple[Any, ...]:
    return ("took", MS, value, 1.0, ())


def traffic(aggregates: list[dict[str, Any]]) -> dict[str, Any]:
    """name → value (counters) or stats (timers) of the test's own metrics, the self-metrics left out."""
    return {a["name"]: a.get("value", a.get("stats")) for a in aggregates if not a["name"].startswith("pystatsd.")}


def self_metric(aggregates: list[dict[str, Any]], name: str) -> list[tuple[dict[str, str], float]]:
    return [(a["tags"], a["value"]) for a in aggregates if a["name"] == f"pystatsd.aggregator.{name}"]


def test_an_interval_is_flushed_once_at_its_edge_with_exact_counters_and_timers(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [hits(1.0), hits(2.0), took(10.0), took(30.0)])
    wire.clock.advance(4.0)
    wire.send(loop, [hits(4.0), took(20.0)])
    wire.clock.to(EDGE - 0.001)
    loop.flush_due()
    assert wire.flushes() == []
    wire.clock.to(EDGE)
    loop.flush_due()
    ((header, aggregates),) = wire.flushes()
    assert (header.interval_start, header.interval, header.seq, header.final) == (T0, INTERVAL, 0, False)
    assert header.covers == {"receiver@1": [0, 0, 1, 6]}
    (counter,) = [a for a in aggregates if a["name"] == "hits"]
    assert counter == {"name": "hits", "type": "counter", "tags": {}, "timestamp": int(T0 + INTERVAL),
                       "interval": 10, "value": 7.0, "rate": 0.7}
    assert traffic(aggregates)["took"] == {
        "count": 3.0, "sum": 60.0, "min": 10.0, "max": 30.0, "mean": 20.0, "median": 20.0,
        "stddev": pytest.approx((200 / 3) ** 0.5), "p50": 20.0, "p90": 30.0, "p95": 30.0, "p99": 30.0}
    assert self_metric(aggregates, "metrics") == [({"shard": "0"}, 6.0)]
    loop.flush_due()
    assert wire.flushes() == []


def test_a_reload_applies_from_the_next_interval_not_the_open_one(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [took(1.0), took(2.0)])
    wire.config_file.write_text(f"flush_interval: {INTERVAL}\npercentiles: [99.9]\n")
    loop.reload()  # SIGHUP in the open interval
    loop.flush_due()  # as run() does after each wake-up
    wire.send(loop, [took(3.0)])
    wire.clock.to(EDGE)
    loop.flush_due()
    wire.send(loop, [took(4.0)])
    wire.clock.to(EDGE + INTERVAL)
    loop.flush_due()
    (_, first), (_, second) = wire.flushes()
    assert sorted(k for k in traffic(first)["took"] if k.startswith("p")) == ["p50", "p90", "p95", "p99"]
    assert traffic(first)["took"]["count"] == 3.0
    assert traffic(second)["took"] == {"count": 1.0, "sum": 4.0, "min": 4.0, "max": 4.0, "mean": 4.0,
                                       "median": 4.0, "stddev": 0.0, "p99_9": 4.0}


def test_a_reload_of_histogram_buckets_applies_as_percentiles_do(wire: Wire) -> None:
    wire.config_file.write_text(f"flush_interval: {INTERVAL}\nhistogram_buckets: [{{match: took, buckets: [2]}}]\n")
    wire.config = load_config(wire.config_file)
    loop = wire.shard()
    wire.send(loop, [took(1.0), took(2.0), took(3.0)])
    wire.config_file.write_text(f"flush_interval: {INTERVAL}\n"
                                "histogram_buckets: [{match: 't*', buckets: [1, 3.5]}]\n")
    loop.reload()
    loop.flush_due()
    wire.clock.to(EDGE)
    loop.flush_due()
    wire.send(loop, [took(4.0), took(3.5)])
    wire.config_file.write_text(f"flush_interval: {INTERVAL}\n")
    loop.reload()
    loop.flush_due()
    wire.clock.to(EDGE + INTERVAL)
    loop.flush_due()
    wire.send(loop, [took(4.0)])
    wire.clock.to(EDGE + 2 * INTERVAL)
    loop.flush_due()
    buckets = [[a.get("buckets") for a in flush if a["name"] == "took"] for _, flush in wire.flushes()]
    # The interval open at a reload flushes with the old bounds; the next with the new; none after a removal.
    assert buckets == [[{"le": [2.0], "counts": [2.0, 3.0]}], [{"le": [1.0, 3.5], "counts": [0.0, 1.0, 2.0]}],
                       [None]]


def test_a_batch_for_an_interval_already_flushed_goes_into_the_oldest_open_one_counted_late(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [hits(1.0)])
    wire.clock.to(EDGE)
    loop.flush_due()
    wire.send(loop, [hits(2.0), hits(3.0)], ts=T0 + 9.9)  # read before the edge, arrived after the flush
    wire.clock.to(EDGE + INTERVAL)
    loop.flush_due()
    (first_header, first), (second_header, second) = wire.flushes()
    assert (first_header.interval_start, traffic(first)) == (T0, {"hits": 1.0})
    assert (second_header.interval_start, traffic(second)) == (T0 + INTERVAL, {"hits": 5.0})
    assert self_metric(second, "late_metrics") == [({"shard": "0"}, 2.0)]
    assert self_metric(first, "late_metrics") == []


def test_a_gap_in_a_receivers_batch_sequence_is_in_the_flush_header_and_counted_lost(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [hits(1.0)], seq=0)
    wire.sent_before += 5  # batches 1 and 2, five metrics, never arrive
    wire.send(loop, [hits(2.0)], seq=3)
    wire.clock.to(EDGE)
    loop.flush_due()
    ((header, aggregates),) = wire.flushes()
    assert header.seq_gaps == {"receiver": 2}
    assert traffic(aggregates) == {"hits": 3.0}
    assert self_metric(aggregates, "lost_batches") == [({"shard": "0", "src": "receiver"}, 2.0)]
    assert self_metric(aggregates, "lost_metrics") == [({"shard": "0", "src": "receiver"}, 5.0)]


def test_a_pipeline_stop_flushes_every_open_interval_the_last_marked_final(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [hits(1.0)])
    wire.send(loop, [hits(2.0)], ts=T0 + INTERVAL + 1.0)  # the next interval's, a receiver's clock ahead
    wire.clock.advance(3.0)
    loop.stop()
    (h1, first), (h2, second) = wire.flushes()
    assert [(h.interval_start, h.seq, h.final) for h in (h1, h2)] == [(T0, 0, False), (T0 + INTERVAL, 1, True)]
    assert (traffic(first), traffic(second)) == ({"hits": 1.0}, {"hits": 2.0})
    assert not handoff_path(wire.run, 0, SHARDS).exists()


def test_a_restart_hands_the_open_intervals_on_and_the_next_instance_flushes_each_once(wire: Wire) -> None:
    loop = wire.shard(stopped_alone=True)
    wire.send(loop, [hits(1.0), took(5.0)])
    wire.send(loop, [hits(10.0)], ts=T0 + INTERVAL + 1.0)
    wire.clock.advance(0.5)
    stop_paused(wire, loop)
    assert wire.flushes() == []  # nothing partial: the next instance flushes the intervals whole
    assert handoff_path(wire.run, 0, SHARDS).exists()
    assert not pause_path(wire.run, 0, SHARDS).exists()

    wire.clock.advance(1.0)
    after = wire.shard()
    assert not handoff_path(wire.run, 0, SHARDS).exists()  # taken: merged once at most
    wire.send(after, [hits(2.0), took(7.0)], ts=T0 + 9.0)  # held by the receiver during the restart
    wire.clock.to(EDGE + TAKEOVER_GRACE_SECS)
    after.flush_due()
    wire.clock.to(EDGE + INTERVAL)
    after.flush_due()
    (h1, first), (h2, second) = wire.flushes()
    assert [(h.interval_start, h.seq, h.epoch, h.final) for h in (h1, h2)] == [
        (T0, 0, loop.epoch, False), (T0 + INTERVAL, 1, loop.epoch, False)]
    assert traffic(first) == {"hits": 3.0, "took": traffic(first)["took"]}
    assert (traffic(first)["took"]["count"], traffic(first)["took"]["sum"]) == (2.0, 12.0)
    assert traffic(second) == {"hits": 10.0}
    # One stream, no gap: the batches before and after the restart follow each other.
    assert h1.seq_gaps == {} and h1.covers == {"receiver@1": [0, 0, 3, 5]}


def stop_paused(wire: Wire, loop: ShardLoop, held: list[tuple[Any, ...]] | None = None) -> None:
    """Stop ``loop`` for a restart, the test playing its receiver's part of the pause: ``held`` (if
    any), sent after the shard's wait could have ended were it not for the receiver, then the
    receiver's last batch, marked ``paused``."""
    stopping = threading.Thread(target=loop.stop)
    stopping.start()
    try:
        wait_for(lambda: pause_path(wire.run, 0, SHARDS).exists(), 5, "the shard to pause its receivers")
        wire.clock.advance(PAUSE_MIN_SECS)
        if held is not None:
            stopping.join(0.5)
            assert stopping.is_alive(), "the shard unbound before its receiver heard lately had paused"
            wire.push(held)
        wire.push([], paused=True)
    finally:
        stopping.join(10)
    assert not stopping.is_alive()


def test_a_restarting_shard_waits_for_its_receivers_paused_batch_and_merges_what_came_before(wire: Wire) -> None:
    loop = wire.shard(stopped_alone=True)
    wire.send(loop, [hits(1.0)])
    wire.clock.advance(0.5)
    stop_paused(wire, loop, held=[hits(2.0)])
    after = wire.shard()
    wire.clock.to(EDGE + TAKEOVER_GRACE_SECS)
    after.flush_due()
    ((header, aggregates),) = wire.flushes()
    assert (header.interval_start, traffic(aggregates)) == (T0, {"hits": 3.0})
    assert header.seq_gaps == {}


def test_a_forwarder_pause_holds_the_flushes_after_the_paused_one_until_it_ends(wire: Wire) -> None:
    loop = wire.shard()
    wire.send(loop, [hits(1.0)])
    begin_pause(forwarder_pause_path(wire.run), hold_secs=60)
    wire.clock.to(EDGE)
    loop.flush_due()
    (h1, first), (marker, nothing) = wire.flushes()
    assert (h1.seq, h1.paused, traffic(first)) == (0, False, {"hits": 1.0})
    assert (marker.seq, marker.paused, nothing) == (1, True, [])
    wire.send(loop, [hits(2.0)])
    wire.clock.to(EDGE + INTERVAL)
    loop.flush_due()
    loop.send_held()
    assert wire.flushes() == []
    assert len(loop.outbox) == 1
    end_pause(forwarder_pause_path(wire.run))
    wire.clock.advance(CHECK_EVERY_SECS)  # the shard looks at the pause files as often as the receivers do
    loop.send_held()
    ((h2, second),) = wire.flushes()
    assert (h2.seq, h2.paused, h2.interval_start, traffic(second)) == (1, False, T0 + INTERVAL, {"hits": 2.0})


def test_a_gauge_with_a_ttl_expires_after_ceil_ttl_over_interval_idle_intervals_across_a_restart(wire: Wire) -> None:
    """A rule's ttl (the batch's gauge_ttls) forgets its gauge after ceil(ttl / flush_interval) intervals
    without an update, where a gauge of a batch without the key (as a receiver before v2.2 sends every
    batch) follows expire_after_intervals; a planned restart in between keeps both, the live gauge's
    ttl and that of a gauge changed in the interval still open."""
    wire.config_file.write_text(f"flush_interval: {INTERVAL}\nexpire_after_intervals: 5\n")
    wire.config = Config(flush_interval=INTERVAL, expire_after_intervals=5)
    loop = wire.shard(stopped_alone=True)
    wire.send(loop, [("ttl.g", G, 7.0, 1.0, ())], gauge_ttls={"ttl.g": 25.0})  # ceil(25 / 10) = 3 intervals
    wire.send(loop, [("plain.g", G, 9.0, 1.0, ())])  # no gauge_ttls: the default, 5
    gauges: list[set[str]] = []

    def flush_at(k: int, shard: ShardLoop) -> None:
        wire.clock.to(EDGE + k * INTERVAL)
        shard.flush_due()
        ((header, aggregates),) = wire.flushes()
        assert header.interval_start == T0 + k * INTERVAL
        gauges.append({a["name"] for a in aggregates
                       if a["type"] == "gauge" and not a["name"].startswith("pystatsd.")})

    flush_at(0, loop)
    flush_at(1, loop)
    # interval 2 is open: a gauge changed in it, with a ttl of 2 intervals, goes with the hand-off's bucket
    wire.send(loop, [("late.g", G, 1.0, 1.0, ())], gauge_ttls={"late.g": 15.0})
    stop_paused(wire, loop)
    after = wire.shard()
    for k in range(2, 6):
        flush_at(k, after)
    assert gauges == [{"ttl.g", "plain.g"}, {"ttl.g", "plain.g"}, {"ttl.g", "plain.g", "late.g"},
                      {"plain.g", "late.g"}, {"plain.g"}, set()]


def carried_gauge(wire: Wire, from_shard: int) -> str:
    """A retiring shard (of a ring of 2) carries one gauge to this ring's shard 0; its name."""
    name = next(f"carried.{i}" for i in range(100) if shard_for(f"carried.{i}", SHARDS) == 0)
    carried = Gauges(30, SeriesLimit(1000, ()))
    carried.values[name] = [5.0, interval_index(T0, INTERVAL)]
    write_carried(wire.run, carried, from_shard=from_shard, from_shards=2, shards=SHARDS)
    return name


def flushed_gauges(wire: Wire) -> list[tuple[float, set[str]]]:
    return [(header.interval_start, {a["name"] for a in aggregates
                                     if a["type"] == "gauge" and not a["name"].startswith("pystatsd.")})
            for header, aggregates in wire.flushes()]


def test_a_new_ring_s_shard_holds_its_first_interval_until_every_retiring_shard_carried(wire: Wire) -> None:
    """A reshard from 2 shards: the ring's first interval is T0 + 10. A retiring shard slowed past that
    interval's due time would otherwise leave its gauges out of it."""
    write_ring(wire.run, Ring(SHARDS, T0 + INTERVAL, previous=2))
    loop = wire.shard()
    wire.clock.to(EDGE)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0, set())]  # the old ring's last interval: not held
    name = carried_gauge(wire, from_shard=0)  # retiring shard 1 has not carried yet
    wire.clock.to(EDGE + INTERVAL + CARRY_WAIT_SECS - 1.0)
    loop.flush_due()
    assert flushed_gauges(wire) == []
    write_carried(wire.run, Gauges(30, SeriesLimit(1000, ())), from_shard=1, from_shards=2, shards=SHARDS)
    wire.clock.advance(CHECK_EVERY_SECS)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0 + INTERVAL, {name})]


def test_a_new_ring_s_shard_that_wakes_late_flushes_its_first_interval_with_the_carried_gauges(wire: Wire) -> None:
    """A busy machine: the shard looks again only once the interval after its ring's first one is due
    too. Neither had data of its own; both report the carried gauge."""
    write_ring(wire.run, Ring(SHARDS, T0 + INTERVAL, previous=2))
    loop = wire.shard()
    wire.clock.to(EDGE)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0, set())]
    name = carried_gauge(wire, from_shard=0)
    write_carried(wire.run, Gauges(30, SeriesLimit(1000, ())), from_shard=1, from_shards=2, shards=SHARDS)
    wire.clock.to(EDGE + 2 * INTERVAL)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0 + INTERVAL, {name}), (T0 + 2 * INTERVAL, {name})]


def test_a_retiring_shard_that_never_carries_holds_the_first_interval_for_carry_wait_secs_only(
        wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    write_ring(wire.run, Ring(SHARDS, T0 + INTERVAL, previous=2))
    loop = wire.shard()
    name = carried_gauge(wire, from_shard=1)
    wire.clock.to(EDGE)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0, set())]
    wire.clock.to(EDGE + INTERVAL + CARRY_WAIT_SECS - 0.01)
    loop.flush_due()
    assert flushed_gauges(wire) == []
    wire.clock.to(EDGE + INTERVAL + CARRY_WAIT_SECS + CHECK_EVERY_SECS)  # held ones are looked at that often
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0 + INTERVAL, {name})]
    assert "No gauges carried from retiring shard(s) 0 of 2 within 5 s" in caplog.text
    wire.clock.to(EDGE + 2 * INTERVAL)
    loop.flush_due()
    assert flushed_gauges(wire) == [(T0 + 2 * INTERVAL, {name})]


def test_a_ring_file_of_an_older_release_holds_nothing(wire: Wire) -> None:
    write_ring(wire.run, Ring(SHARDS, T0 + INTERVAL))  # no previous: how many retire is not known
    loop = wire.shard()
    wire.clock.to(EDGE)
    loop.flush_due()
    wire.clock.to(EDGE + INTERVAL)
    loop.flush_due()
    assert [start for start, _ in flushed_gauges(wire)] == [T0, T0 + INTERVAL]
