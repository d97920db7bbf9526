"""The receiver's loop in-process, built as its stage builds it: a real UDP listener on 127.0.0.1, PULL
sockets bound at each shard's endpoint in a temporary run directory playing the shards, and a clock
the test moves.

What a whole pipeline proved before, one stage here: datagrams become batches on the shard that owns
each name; bad lines are counted by reason and their neighbours kept; the window leaves at the
interval's edge; a paused shard gets one paused batch, then nothing until its pause ends, then what
was held for it; the ring switches at its edge.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from harness.ports import free_port
from harness.wait import wait_for
from stages.common import contract
from stages.common.config import load_config
from stages.common.sharding import forwarder_endpoint, shard_endpoint, shard_for
from stages.receiver.receiver_loop import Receiver
from stages.rundir.pause import begin_pause, end_pause, pause_path
from stages.rundir.ring import CHECK_EVERY_SECS, Ring, write_ring
from tests.fake_clock import FakeClock

INTERVAL = 10.0
#: An interval's edge: the fake clock starts here.
START = 1_700_000_000.0
Ctx = zmq.Context[zmq.Socket[bytes]]
Batch = tuple[contract.BatchHeader, dict[str, float]]


class Bench:
    """A receiver of two shards, the shards' PULL sockets (any ring's, bound on first use), a UDP sender."""

    def __init__(self, tmp_path: Path, ctx: Ctx) -> None:
        self.run = tmp_path / "run"
        self.run.mkdir(mode=0o700)
        self.port = free_port()
        self.config_file = tmp_path / "pystatsd.yaml"
        # No self-metrics: every batch then holds exactly what the test sent.
        self.config_file.write_text(f"bind_port: {self.port}\nflush_interval: {INTERVAL}\nbatch_max_age_ms: 1000\n"
                                    "self_metrics_prefix: ''\n")
        self.ctx = ctx
        self.clock = FakeClock(START + 1.0)
        self.pulls: dict[tuple[int, int], zmq.Socket[bytes]] = {}
        self.ring(2)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver: Receiver | None = None

    def ring(self, shards: int) -> None:
        for shard in range(shards):
            self.ring_shard(shard, shards)

    def ring_shard(self, shard: int, shards: int) -> None:
        pull = self.ctx.socket(zmq.PULL)
        pull.bind(shard_endpoint(self.run, shard, shards))
        self.pulls[shard, shards] = pull

    def start(self) -> Receiver:
        # As stages/receiver/stage.py builds it, with the test's clock.
        self.receiver = Receiver(load_config(self.config_file), 2, self.ctx, self.run, "receiver",
                                 config_file=self.config_file, clock=self.clock)
        return self.receiver

    def send(self, *payloads: bytes) -> None:
        for payload in payloads:
            self.sender.sendto(payload, ("127.0.0.1", self.port))

    def read(self, datagrams: int) -> None:
        """What the loop does on a wake-up, until the receiver has read ``datagrams`` in all."""
        receiver = self.receiver
        assert receiver is not None

        def more() -> bool:
            for listener in receiver.listeners:
                for fd in listener.fds():
                    receiver.read(listener, fd)
            return receiver.datagrams >= datagrams

        wait_for(more, 5, f"{datagrams} datagrams read", every=0.01)

    def batches(self, shard: int, shards: int = 2, wait_ms: int = 200) -> list[Batch]:
        """What shard ``shard`` of the ring of ``shards`` got: each batch's header and its counters, by name."""
        pull, got = self.pulls[shard, shards], []
        while pull.poll(wait_ms):
            header, body = contract.decode_batch(pull.recv_multipart())
            counters = contract.decode_batch_body(body).counters
            got.append((header, {key.split("\x1f")[0]: value for key, value in zip(counters[::2], counters[1::2],
                                                                                    strict=True)}))
            wait_ms = 100  # ZeroMQ's I/O thread delivers the next a moment after the first
        return got

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self.sender.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    ctx: Ctx = zmq.Context()
    bench = Bench(tmp_path, ctx)
    yield bench
    bench.close()
    ctx.destroy(linger=0)


def names_on(shard: int, shards: int, count: int, prefix: str = "m") -> list[str]:
    """``count`` names that shard ``shard`` of ``shards`` owns."""
    names = (f"{prefix}{i}" for i in range(10_000))
    return [name for name in names if shard_for(name, shards) == shard][:count]


def counters(*names: str, value: int = 1) -> bytes:
    return "\n".join(f"{name}:{value}|c" for name in names).encode()


def merged(batches: list[Batch]) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, got in batches:
        for name, value in got.items():
            out[name] = out.get(name, 0.0) + value
    return out


def test_datagrams_become_batches_on_the_shard_that_owns_each_name(bench: Bench) -> None:
    receiver = bench.start()
    zero, one = names_on(0, 2, 3), names_on(1, 2, 3)
    bench.send(counters(*zero, *one), counters(*zero[:1], value=4), counters(*one[:2], value=2))
    bench.read(3)
    bench.clock.to(START + INTERVAL)
    receiver.send_due()
    assert merged(bench.batches(0)) == {zero[0]: 5.0, zero[1]: 1.0, zero[2]: 1.0}
    assert merged(bench.batches(1)) == {one[0]: 3.0, one[1]: 3.0, one[2]: 1.0}
    assert receiver.metrics == 9 and receiver.bad == {}


def test_bad_lines_are_counted_by_reason_and_their_neighbours_kept(bench: Bench,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    receiver = bench.start()
    bench.send(b"mix.ok:1|c\nmix.nan:nan|c\nmix.ok:2|c\nno_type:1\nmix.rate:1|c|@0\n\xff\xfe:1|c\nmix.ok:3|c\n",
               # A malformed service check and event (good ones go on to the forwarder, not counted here).
               b"_sc|mix.check|9|#env:prod\n", b"_e{5,9}:title|text|#env:prod\n",
               b'{"metric_name": "mix.json", "metric_type": "counter", "count": 4}\n{"metric_name": "x"}',
               # Not JSON-looking, so the statsd parser sees a line without a value.
               b"not json {",
               b'{"metric_name": "mix.json", "metric_type": "counter", "tag": null}')
    bench.read(6)
    bench.clock.to(START + INTERVAL)
    receiver.send_due()
    got = merged(bench.batches(0) + bench.batches(1))
    assert got == {"mix.ok": 6.0, "mix.json": 4.0}
    assert receiver.metrics == 4
    assert receiver.bad == {"non_finite": 1, "no_type": 1, "no_value": 1, "bad_sample_rate": 1, "invalid_utf8": 1,
                            "missing_field": 1, "bad_tag": 1, "bad_service_check": 1, "bad_event": 1}
    assert "Dropped 9 bad lines so far" in caplog.text


def test_the_window_leaves_at_the_interval_edge_and_what_comes_after_is_the_next_one(bench: Bench) -> None:
    receiver = bench.start()
    name = names_on(0, 2, 1)[0]
    bench.clock.to(START + INTERVAL - 0.5)  # younger than batch_max_age_ms at the edge: the edge sends it
    bench.send(counters(name))
    bench.read(1)
    bench.clock.to(START + INTERVAL - 0.001)
    receiver.send_due()
    assert bench.batches(0) == []
    bench.clock.to(START + INTERVAL)
    receiver.send_due()
    (header, got), = bench.batches(0)
    assert (header.ts, header.metrics, got) == (START + INTERVAL - 0.5, 1, {name: 1.0})
    bench.clock.to(START + INTERVAL + 0.2)
    bench.send(counters(name, value=7))
    bench.read(2)
    receiver.send_due()
    assert bench.batches(0) == []
    bench.clock.to(START + 2 * INTERVAL)
    receiver.send_due()
    (header, got), = bench.batches(0)
    assert (header.ts, header.seq, got) == (START + INTERVAL + 0.2, 1, {name: 7.0})


def test_a_stamped_metric_goes_in_the_window_of_its_interval_and_no_other_as_the_window_moves_on(
        bench: Bench) -> None:
    receiver = bench.start()
    name = names_on(0, 2, 1)[0]
    now, later, earlier = int(START + 5), int(START + INTERVAL), int(START - 1)
    bench.send(f"{name}:1|c|T{now}\n{name}:10|c|T{later}\n{name}:100|c|T{earlier}".encode(),
               f'{{"metric_name": "{name}", "metric_type": "counter", "value": 1000, "timestamp": {later}}}'.encode())
    bench.read(2)
    bench.clock.to(START + INTERVAL + 0.2)  # the next interval: its window is the one stamped `later`
    receiver.send_due()
    bench.send(f"{name}:10|c|T{later}\n{name}:1|c|T{now}".encode())
    bench.read(3)
    bench.clock.to(START + 2 * INTERVAL)
    receiver.send_due()
    assert [(header.ts, got) for header, got in bench.batches(0)] == [
        (START + 1.0, {name: 1.0}), (START + INTERVAL + 0.2, {name: 10.0})]
    assert receiver.bad == {"in_future": 2, "too_old": 2} and receiver.metrics == 2


def test_events_and_service_checks_go_to_the_forwarder_as_records_counted_per_kind(bench: Bench) -> None:
    forwarder = bench.ctx.socket(zmq.PULL)
    forwarder.bind(forwarder_endpoint(bench.run))
    receiver = bench.start()
    bench.send(b"_e{6,4}:deploy|v2.1|t:success|#env:prod\nok:1|c\n_sc|db.up|2|d:1700000003|m:disk | full",
               b"_sc|db.up|0")
    bench.read(2)
    messages = []
    while forwarder.poll(500):
        messages.append(contract.decode_records(forwarder.recv_multipart()))
    forwarder.close(linger=0)
    # One message per burst of datagrams read (the two may come in one read or two).
    assert [(header.src, header.seq) for header, _ in messages] == [("receiver", seq) for seq in range(len(messages))]
    assert sum(header.n for header, _ in messages) == 3
    now = int(START + 1.0)  # a record without a d: field is stamped with the second it was read
    assert [record for _, records in messages for record in records] == [
        {"name": "deploy", "type": "event", "tags": {}, "timestamp": now, "text": "v2.1", "hostname": "",
         "aggregation_key": "", "priority": "normal", "source_type_name": "", "alert_type": "success"} | {
            "tags": {"env": "prod"}},
        {"name": "db.up", "type": "service_check", "tags": {}, "timestamp": 1700000003, "status": 2,
         "status_name": "critical", "hostname": "", "message": "disk | full"},
        {"name": "db.up", "type": "service_check", "tags": {}, "timestamp": now, "status": 0, "status_name": "ok",
         "hostname": "", "message": ""}]
    assert (receiver.records_out.sent, receiver.bad, receiver.metrics) == ({"event": 1, "service_check": 2}, {}, 1)


def test_a_paused_shard_gets_one_paused_batch_then_nothing_until_its_pause_ends(bench: Bench) -> None:
    receiver = bench.start()
    zero, one = names_on(0, 2, 2), names_on(1, 2, 2)
    begin_pause(pause_path(bench.run, 1, 2), 60.0)
    bench.send(counters(*zero, *one))
    bench.read(1)
    bench.clock.to(START + INTERVAL)
    receiver.send_due()
    assert merged(bench.batches(0)) == dict.fromkeys(zero, 1.0)
    (paused, got), = bench.batches(1)
    assert (paused.paused, paused.metrics, got) == (True, 0, {})
    # A second interval while it pauses: held, in order.
    bench.send(counters(*zero, *one, value=2))
    bench.read(2)
    bench.clock.to(START + 2 * INTERVAL)
    receiver.send_due()
    assert merged(bench.batches(0)) == dict.fromkeys(zero, 2.0)
    assert bench.batches(1) == []
    end_pause(pause_path(bench.run, 1, 2))
    bench.clock.advance(CHECK_EVERY_SECS)
    receiver.send_due()
    held = bench.batches(1)
    assert [got for _, got in held] == [dict.fromkeys(one, 1.0), dict.fromkeys(one, 2.0)]
    assert [header.seq for header in (paused, *(h for h, _ in held))] == [0, 1, 2]
    assert [header.ts for header, _ in held] == [START + 1.0, START + INTERVAL]  # each in the interval it was read in


def test_the_ring_switches_at_its_edge_and_no_window_is_split_between_rings(bench: Bench) -> None:
    bench.ring(3)
    receiver = bench.start()
    write_ring(bench.run, Ring(3, START + 2 * INTERVAL))
    before, after = names_on(0, 2, 2, "b") + names_on(1, 2, 2, "b"), names_on(2, 3, 2, "a") + names_on(0, 3, 2, "a")
    bench.clock.to(START + 2 * INTERVAL - 0.5)
    bench.send(counters(*before))
    bench.read(1)
    assert receiver.shards == 2
    bench.clock.to(START + 2 * INTERVAL)
    bench.send(counters(*after))
    bench.read(2)
    assert receiver.shards == 3
    bench.clock.to(START + 3 * INTERVAL)
    receiver.send_due()
    for shard in range(2):
        assert merged(bench.batches(shard, 2)) == {n: 1.0 for n in before if shard_for(n, 2) == shard}
    for shard in range(3):
        assert merged(bench.batches(shard, 3)) == {n: 1.0 for n in after if shard_for(n, 3) == shard}


def test_a_stopped_shard_costs_only_its_own_batches_each_counted_dropped_once_its_queue_is_full(bench: Bench) -> None:
    # A shard that is down has no socket bound: ZeroMQ queues its batches up to queues.shard_batches,
    # then the receiver drops (never blocks) and counts; the other shard gets everything.
    bench.config_file.write_text(bench.config_file.read_text() + "queues: {shard_batches: 2}\n")
    stopped = bench.pulls.pop((1, 2))
    stopped.close(linger=0)
    receiver = bench.start()
    zero, one = names_on(0, 2, 2), names_on(1, 2, 3)
    for window in range(6):
        bench.send(counters(*zero, *one))
        bench.read(window + 1)
        bench.clock.advance(INTERVAL)
        receiver.send_due()
    assert merged(bench.batches(0)) == {zero[0]: 6.0, zero[1]: 6.0}
    dropped = receiver.batcher.dropped[1]
    assert dropped > 0 and dropped % 3 == 0, dropped
    assert receiver.figures(0)["dropped_shard_full"] == {"1": dropped}
    # What was not dropped waited in its queue: the shard, back, gets exactly that.
    bench.ring_shard(1, 2)
    queued = merged(bench.batches(1, wait_ms=1000))
    assert sum(queued.values()) + dropped == 6 * 3
    assert set(queued) <= set(one)
