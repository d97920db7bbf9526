"""A shard's outbox against a real PULL socket where the forwarder binds: the order of what it sends,
the ``paused`` flush and the hold while the forwarder pauses for a restart, the hold queue's bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from stages.aggregator.outbox import Outbox
from stages.common import contract
from stages.common.sharding import forwarder_endpoint
from stages.rundir.pause import begin_pause, end_pause, forwarder_pause_path


def flush(seq: int, paused: bool = False) -> contract.FlushHeader:
    return contract.FlushHeader(shard=0, shards=1, epoch=1, seq=seq, interval_start=0.0 if paused else 10.0 * seq,
                                interval=10.0, n=0, paused=paused)


MARKER = flush(99, paused=True)


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[tuple[Outbox, zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(forwarder_endpoint(tmp_path))
    outbox = Outbox(ctx, tmp_path, hold_max=3)
    yield outbox, pull
    outbox.close(0)
    pull.close(0)
    ctx.term()


def received(pull: zmq.Socket[bytes], wait_ms: int = 300) -> list[tuple[int, bool]]:
    """(seq, paused) of every flush that arrives within ``wait_ms`` of the one before."""
    got = []
    while pull.poll(wait_ms):
        header = contract.decode_flush_header(pull.recv_multipart())
        got.append((header.seq, header.paused))
    return got


def look_again(outbox: Outbox) -> None:
    outbox.pauses.next_check = 0.0


def test_flushes_go_out_in_order_and_no_paused_flush_without_a_pause(wire: tuple[Outbox, zmq.Socket[bytes]]) -> None:
    outbox, pull = wire
    for seq in range(3):
        outbox.put(contract.encode_flush(flush(seq), []))
    outbox.send(MARKER)
    assert received(pull) == [(0, False), (1, False), (2, False)]
    assert len(outbox) == 0


def test_a_forwarder_pause_gets_what_was_queued_then_one_paused_flush_then_nothing_until_it_ends(
        tmp_path: Path, wire: tuple[Outbox, zmq.Socket[bytes]]) -> None:
    outbox, pull = wire
    outbox.put(contract.encode_flush(flush(0), []))
    begin_pause(forwarder_pause_path(tmp_path), hold_secs=30)
    look_again(outbox)
    outbox.send(MARKER)
    assert received(pull) == [(0, False), (99, True)]
    outbox.put(contract.encode_flush(flush(1), []))
    look_again(outbox)
    outbox.send(MARKER)
    outbox.send(MARKER)  # one paused flush per pause, however often it is looked at
    assert received(pull) == []
    assert len(outbox) == 1
    end_pause(forwarder_pause_path(tmp_path))
    look_again(outbox)
    outbox.send(MARKER)
    assert received(pull) == [(1, False)]
    # The next pause has its own paused flush.
    begin_pause(forwarder_pause_path(tmp_path), hold_secs=30)
    look_again(outbox)
    outbox.send(MARKER)
    assert received(pull) == [(99, True)]


def test_a_pause_past_its_until_holds_nothing(tmp_path: Path, wire: tuple[Outbox, zmq.Socket[bytes]]) -> None:
    outbox, pull = wire
    begin_pause(forwarder_pause_path(tmp_path), hold_secs=-1)  # a forwarder killed while it stopped
    outbox.put(contract.encode_flush(flush(0), []))
    outbox.send(MARKER)
    assert received(pull) == [(0, False)]


def test_a_stopping_shard_sends_what_it_holds_through_a_pause(tmp_path: Path,
                                                              wire: tuple[Outbox, zmq.Socket[bytes]]) -> None:
    outbox, pull = wire
    begin_pause(forwarder_pause_path(tmp_path), hold_secs=30)
    outbox.send(MARKER)
    outbox.put(contract.encode_flush(flush(0), []))
    outbox.send_all()
    assert received(pull) == [(99, True), (0, False)]


def test_past_its_bound_the_hold_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    outbox = Outbox(ctx, tmp_path, hold_max=3)  # no forwarder bound: nothing leaves
    for seq in range(5):
        outbox.put(contract.encode_flush(flush(seq), []))
    assert (len(outbox), outbox.dropped) == (3, 2)
    assert [contract.decode_flush_header(frames).seq for frames in outbox.hold] == [2, 3, 4]
    outbox.close(0)
    ctx.term()
