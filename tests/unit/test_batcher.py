"""When the receiver's batch window leaves, and what its batches say: one entry per series, metrics accounted.

Batches go through real ZeroMQ sockets (inproc) and are decoded with the contract, as a shard does.
Every test runs with the Python window and, where it was built, the compiled one.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stages.common import contract
from stages.common.model import MetricType, series_key
from stages.common.sharding import shard_for
from stages.receiver.batcher import WINDOW_BATCHES, Batcher
from stages.receiver.identity import Decided
from stages.receiver.parsers import statsd_lines
from stages.receiver.unsent import read_predecessor
from stages.receiver.window import CompiledWindow, PyWindow
from stages.rundir.pause import PauseWatch, begin_pause, end_pause, pause_path
from tests.compiled_parts import needs_compiled_window

C, G, GD, MS, S = (int(t) for t in (MetricType.COUNTER, MetricType.GAUGE, MetricType.GAUGE_DELTA,
                                    MetricType.TIMER, MetricType.SET))
NOW = 1000.25
WINDOWS = [pytest.param(PyWindow, id="python"),
           pytest.param(CompiledWindow, id="compiled",
                        marks=needs_compiled_window)]


@pytest.fixture(params=WINDOWS)
def window_type(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def shards() -> Iterator[tuple[list[zmq.Socket[bytes]], list[zmq.Socket[bytes]]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pulls, pushes = [], []
    for shard in range(2):
        pull = ctx.socket(zmq.PULL)
        pull.bind(f"inproc://shard-{shard}")
        push = ctx.socket(zmq.PUSH)
        push.connect(f"inproc://shard-{shard}")
        pulls.append(pull)
        pushes.append(push)
    yield pushes, pulls
    ctx.destroy(linger=0)


def batcher_for(window_type: type, pushes: list[zmq.Socket[bytes]], run_dir: Path, max_entries: int = 1000,
                hold_max: int = 100, unsent_path: Path | None = None) -> Batcher:
    window = window_type(len(pushes), (), statsd_lines({}))
    return Batcher(pushes, "r1", window, max_entries, max_age_secs=0.05, interval=10.0,
                   pauses=PauseWatch.of_ring(run_dir, len(pushes)), hold_max=hold_max, unsent_path=unsent_path)


def received(pull: zmq.Socket[bytes]) -> list[tuple[contract.BatchHeader, contract.BatchBody]]:
    batches = []
    while pull.poll(0):
        header, body = contract.decode_batch(pull.recv_multipart())
        batches.append((header, contract.decode_batch_body(body)))
    return batches


def test_a_series_leaves_as_one_entry_of_everything_it_received(window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes, tmp_path)
    hits = ("hits", C, 1.0, 1.0, ("env", "prod"))
    sampled = ("hits", C, 2.0, 0.5, ("env", "prod"))
    samples = [hits] * 700 + [sampled] * 3 + [("lat", MS, 5.0, 0.5, ()), ("lat", MS, 1.5, 1.0, ())]
    samples += [("users", S, "u1", 1.0, ())] * 4 + [("users", S, "u0", 1.0, ())]
    samples += [("temp", GD, 3.0, 1.0, ()), ("temp", G, 1.0, 1.0, ()), ("temp", G, 2.0, 1.0, ()),
                ("temp", GD, 5.0, 1.0, ()), ("depth", GD, -1.0, 1.0, ()), ("depth", GD, -2.0, 1.0, ())]
    batcher.add(samples, NOW)
    batcher.send_all()

    batches = {shard: received(pull) for shard, pull in enumerate(pulls)}
    assert all(shard_for(name, 2) == shard for shard, got in batches.items() for _, body in got
               for section, stride in zip(body, contract.BODY_STRIDES, strict=True)
               for name in (key.split("\x1f")[0] for key in section[::stride]))
    bodies = [body for got in batches.values() for _, body in got]
    counters = [entry for body in bodies for entry in body.counters]
    assert counters == [series_key("hits", ("env", "prod")), 712.0]  # 700 + 3 × 2 / 0.5
    sampled_entries = [entry for body in bodies for entry in body.sampled]
    assert sampled_entries[:3] == ["lat", MS, 3.0]  # 1 / 0.5 + 1
    assert list(contract.unpack_values(sampled_entries[3])) == [5.0, 1.5]
    assert [entry for body in bodies for entry in body.sets] == ["users", ["u1", "u0"]]
    gauges = {key: (was_set, value) for body in bodies
              for key, was_set, value in zip(body.gauges[::3], body.gauges[1::3], body.gauges[2::3], strict=True)}
    assert gauges == {"temp": (True, 7.0), "depth": (False, -3.0)}  # the last value set, plus the change after
    headers = [header for got in batches.values() for header, _ in got]
    assert all(header.ts == NOW for header in headers)
    assert sum(header.metrics for header in headers) == len(samples) == batcher.sent_metrics
    assert sum(header.n for header in headers) == 5


def test_a_shard_holding_more_than_max_entries_gets_several_batches_whose_metrics_add_up(window_type: type,
                                                                                         tmp_path: Path,
                                                                                         shards) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes[:1], tmp_path, max_entries=3)
    samples = [("a", C, 1.0, 1.0, ())] * 10 + [(f"t{i}", MS, 1.0, 1.0, ()) for i in range(4)]
    batcher.add(samples, NOW)
    batcher.send_all()
    batches = received(pulls[0])
    assert [(header.seq, header.n, header.metrics, header.sent_before) for header, _ in batches] == [
        (0, 3, 12, 0), (1, 2, 2, 12)]


def test_a_window_leaves_early_once_it_holds_its_full_batches(window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes[:1], tmp_path, max_entries=2)
    distinct = [(f"c{i}", C, 1.0, 1.0, ()) for i in range(WINDOW_BATCHES * 2)]
    batcher.add(distinct[:-1] * 3, NOW)  # repeats make no new entries
    assert received(pulls[0]) == []
    batcher.add(distinct[-1:], NOW)
    batches = received(pulls[0])
    assert [header.n for header, _ in batches] == [2] * WINDOW_BATCHES
    assert sum(header.metrics for header, _ in batches) == 3 * len(distinct) - 2


def test_a_full_shard_queue_counts_the_metrics_the_lost_batch_stood_for(window_type: type, tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)  # connected to nothing: every send finds no room, as with a full queue
    try:
        batcher = batcher_for(window_type, [push], tmp_path)
        batcher.add([("hits", C, 1.0, 1.0, ())] * 50, NOW)
        batcher.send_all()
        assert (batcher.dropped, batcher.sent_metrics, batcher.seq) == ([50], 0, [0])
    finally:
        ctx.destroy(linger=0)


def test_the_window_leaves_at_the_interval_edge_and_when_old(window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes, tmp_path)
    batcher.add([("hits", C, 1.0, 1.0, ())], 1009.9)
    assert batcher.next_due() == pytest.approx(1009.95)
    batcher.add([("hits", C, 1.0, 1.0, ())], 1009.99)
    assert batcher.next_due() == pytest.approx(1009.95)  # a window's age counts from its first sample
    batcher.add([("hits", C, 1.0, 1.0, ())], 1010.0)  # the edge: the first window leaves on its own
    assert [(header.ts, header.metrics) for pull in pulls for header, _ in received(pull)] == [(1009.9, 2)]
    assert batcher.next_due() == pytest.approx(1010.05)
    batcher.send_due(1010.03)
    assert [header.ts for pull in pulls for header, _ in received(pull)] == []
    batcher.send_due(1010.06)
    assert [header.ts for pull in pulls for header, _ in received(pull)] == [1010.0]
    assert batcher.next_due() is None


def shard_of(name: str) -> int:
    return shard_for(name, 2)


#: A counter of each shard (names chosen by their crc32).
ON = {shard_of(name): name for name in ("a", "b", "c", "d")}


def test_a_paused_shard_gets_one_paused_batch_then_its_batches_once_the_pause_ends(window_type: type, shards,
                                                                                     tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes, tmp_path)
    paused, other = 1, 0
    begin_pause(pause_path(tmp_path, paused, 2), hold_secs=5)
    for n in range(3):
        batcher.add([(ON[paused], C, 1.0, 1.0, ()), (ON[other], C, 1.0, 1.0, ())] * (n + 1), NOW)
        batcher.send_all()
    # The other shard gets its batches as ever; the paused one an empty batch marked paused, then nothing.
    assert [h.metrics for h, _ in received(pulls[other])] == [1, 2, 3]
    (ack, body), = received(pulls[paused])
    assert (ack.paused, ack.n, ack.metrics, ack.seq, ack.sent_before) == (True, 0, 0, 0, 0)
    assert body == contract.BatchBody.empty()
    assert batcher.next_due() == pytest.approx(batcher.pauses.next_check)  # it looks again for the end

    end_pause(pause_path(tmp_path, paused, 2))
    batcher.send_due(time.time() + 1)
    got = received(pulls[paused])
    # Held batches keep the time they were read at, and continue the stream's numbering after the paused one.
    assert [(h.seq, h.sent_before, h.metrics, h.ts, h.paused) for h, _ in got] == [
        (1, 0, 1, NOW, False), (2, 1, 2, NOW, False), (3, 3, 3, NOW, False)]
    assert [body.counters for _, body in got] == [[ON[paused], 1.0], [ON[paused], 2.0], [ON[paused], 3.0]]
    assert batcher.held == {} and batcher.next_due() is None


def test_a_pause_past_its_until_holds_nothing(window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes, tmp_path)
    begin_pause(pause_path(tmp_path, 0, 2), hold_secs=-1)  # a shard killed while it stopped left it behind
    batcher.add([(ON[0], C, 1.0, 1.0, ())], NOW)
    batcher.send_all()
    assert [(h.paused, h.metrics) for h, _ in received(pulls[0])] == [(False, 1)]


def test_what_a_paused_shard_cannot_hold_is_dropped_and_counted(window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    batcher = batcher_for(window_type, pushes, tmp_path, hold_max=2)
    begin_pause(pause_path(tmp_path, 0, 2), hold_secs=5)
    for n in range(4):
        batcher.add([(ON[0], C, 1.0, 1.0, ())] * (n + 1), NOW)
        batcher.send_all()
    assert batcher.dropped == [3 + 4, 0]
    batcher.release_all()  # a stop or a restart in place: what is held goes on to ZeroMQ
    assert [(h.paused, h.metrics) for h, _ in received(pulls[0])] == [(True, 0), (False, 1), (False, 2)]


def test_held_batches_zeromq_has_no_room_for_yet_stay_held_in_order(window_type: type, tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PUSH)  # connected to nothing yet: the next instance has not bound
    try:
        batcher = batcher_for(window_type, [push], tmp_path)
        begin_pause(pause_path(tmp_path, 0, 1), hold_secs=5)
        batcher.add([("hits", C, 1.0, 1.0, ())], NOW)
        batcher.send_all()
        end_pause(pause_path(tmp_path, 0, 1))
        batcher.send_due(time.time() + 1)
        batcher.add([("hits", C, 1.0, 1.0, ())] * 2, NOW + 1)
        batcher.send_all()  # after the held one, not before it
        assert (batcher.dropped, [metrics for _, _, metrics, *_ in batcher.held[0]]) == ([0], [1, 2])
        pull = ctx.socket(zmq.PULL)
        pull.bind("inproc://next-instance")
        push.connect("inproc://next-instance")
        batcher.send_due(time.time() + 2)
        assert [(h.seq, h.metrics, h.ts) for h, _ in received(pull)] == [(0, 1, NOW), (1, 2, NOW + 1)]
        assert batcher.held == {} and batcher.dropped == [0]
    finally:
        ctx.destroy(linger=0)


def test_a_killed_batchers_unsent_file_says_what_it_held_and_a_planned_stop_says_nothing(
        window_type: type, shards, tmp_path: Path) -> None:
    pushes, pulls = shards
    path = tmp_path / "r1.unsent"
    batcher = batcher_for(window_type, pushes, tmp_path, unsent_path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    names = [f"n{i}" for i in range(8)]
    batcher.add([(name, C, 1.0, 1.0, ()) for name in names * 3], NOW)
    batcher.send_all()
    batcher.add([(name, C, 1.0, 1.0, ()) for name in names], NOW + 0.5)
    # Killed here: the file, read as a successor reads it, holds the second window, per shard.
    record = read_predecessor(path)
    assert record is not None
    assert [stream.held for stream in record.streams] == [
        sum(1 for name in names if shard_for(name, 2) == shard) for shard in range(2)]
    for shard, pull in enumerate(pulls):
        [(header, _)] = received(pull)
        stream = record.streams[shard]
        assert (stream.next_seq, stream.sent_before) == (header.seq + 1, header.sent_before + header.metrics)
    batcher.send_all()
    batcher.unsent.close()
    assert read_predecessor(path) is None


def test_the_ttls_the_rules_give_gauges_go_in_their_batch_header_held_ones_too(window_type: type, shards,
                                                                                tmp_path: Path) -> None:
    """A rule's ttl reaches the shard in the header of the batch that holds its gauge (``gauge_ttls``), also
    when the batch was held for a pausing shard; a batch with none has none."""
    pushes, pulls = shards
    names = {shard_of(f"t{n}"): f"t{n}" for n in range(20)}  # a gauge with a ttl on each shard
    plain = {shard_of(f"p{n}"): f"p{n}" for n in range(20)}  # and one without

    def rules(name: str, mtype: int, tags: tuple[str, ...]) -> Decided | None:
        return Decided(0, None, None, 30.0) if name.startswith("t") else None

    batcher = Batcher(pushes, "r1", window_type(2, (), statsd_lines({}), rules), 1000, max_age_secs=0.05,
                      interval=10.0, pauses=PauseWatch.of_ring(tmp_path, 2), hold_max=100)
    paused, other = 1, 0
    begin_pause(pause_path(tmp_path, paused, 2), hold_secs=5)
    window = batcher.open(NOW)
    for shard in (paused, other):
        for sample in ((names[shard], G, 1.0, 1.0, ()), (plain[shard], GD, 2.0, 1.0, ()), (ON[shard], C, 1.0, 1.0, ())):
            assert window.add(sample) is None
    batcher.filled()
    batcher.send_all()
    assert [h.gauge_ttls for h, _ in received(pulls[other])] == [{names[other]: 30.0}]
    end_pause(pause_path(tmp_path, paused, 2))
    batcher.send_due(time.time() + 1)
    assert [h.gauge_ttls for h, _ in received(pulls[paused])] == [{}, {names[paused]: 30.0}]  # the paused one has none
    batcher.add([(ON[other], C, 1.0, 1.0, ())], NOW)
    batcher.send_all()
    assert [h.gauge_ttls for h, _ in received(pulls[other])] == [{}]
