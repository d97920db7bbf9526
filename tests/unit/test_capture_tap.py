"""The receiver's capture tap (stages.receiver.capture_tap) and the command's side of it
(stages.control.capture): a reader too slow never holds the receiver up, what it could not take is
counted exactly; a file never grows past --max-bytes and says it stopped there."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from harness.wait import wait_for
from stages.common import capture_wire
from stages.control.capture import Capture, summary
from stages.control.capture_file import CaptureReader, CaptureWriter
from stages.receiver import capture_tap
from stages.receiver.capture_tap import CaptureTap
from stages.rundir.capture_request import CaptureRequest, capture_endpoint, end_request, write_request

Ctx = zmq.Context[zmq.Socket[bytes]]


class OneDatagram:
    """A datagram listener whose every read gives one payload."""

    url = "udp://127.0.0.1:8125"

    def read(self, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        return [b"hits:1|c"]


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    context: Ctx = zmq.Context()
    yield context
    context.destroy(linger=0)


def test_without_a_request_a_read_is_the_listeners_and_nothing_is_sent(tmp_path: Path, ctx: Ctx) -> None:
    tap = CaptureTap(ctx, tmp_path, "receiver")
    tap.follow(time.time(), [OneDatagram()])
    assert tap.session is None
    assert tap.read(OneDatagram(), 3, 256, {}) == [b"hits:1|c"]


def test_a_request_for_another_endpoint_than_the_commands_socket_here_is_ignored(tmp_path: Path, ctx: Ctx) -> None:
    write_request(tmp_path, CaptureRequest("one", "tcp://192.0.2.1:5555", time.time() + 60, os.getpid(), None))
    tap = CaptureTap(ctx, tmp_path, "receiver")
    tap.follow(time.time(), [OneDatagram()])
    assert tap.session is None


def test_a_request_whose_command_is_gone_or_past_its_time_is_ignored(tmp_path: Path, ctx: Ctx) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid, until in ((gone.pid, time.time() + 60), (os.getpid(), time.time() - 1)):
        write_request(tmp_path, CaptureRequest("one", capture_endpoint(tmp_path, pid), until, pid, None))
        tap = CaptureTap(ctx, tmp_path, "receiver")
        tap.follow(time.time(), [OneDatagram()])
        assert tap.session is None


def test_a_reader_too_slow_never_holds_the_receiver_and_every_payload_is_captured_or_counted(
        tmp_path: Path, ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_tap, "QUEUE_MESSAGES", 10)
    endpoint = capture_endpoint(tmp_path, os.getpid())
    write_request(tmp_path, CaptureRequest("one", endpoint, time.time() + 60, os.getpid(), None))
    tap = CaptureTap(ctx, tmp_path, "receiver")
    listener = OneDatagram()
    tap.follow(time.time(), [listener])
    assert tap.session is not None
    # Nobody reads yet: the queue fills, and every read still returns at once with its payload.
    began = time.monotonic()
    reads = 200
    for _ in range(reads):
        assert tap.read(listener, 3, 256, {}) == [b"hits:1|c"]
    assert time.monotonic() - began < 1.0
    assert tap.session.dropped > 0
    pull = ctx.socket(zmq.PULL)
    pull.bind(endpoint)
    end_request(tmp_path, "one")
    tap.watch.next_check = 0.0
    tap.follow(time.time(), [listener])
    assert tap.session is None
    wait_for(lambda: (tap.follow(time.time(), [listener]), not tap.ending)[1], 5, "the end to be sent")
    captured, end = 0, None
    while end is None:
        assert pull.poll(5000)
        head, payloads = capture_wire.decode(pull.recv_multipart())
        captured += len(payloads)
        end = head if head.get("end") else None
    pull.close(linger=0)
    assert captured + end["dropped"] == reads


def test_a_capture_stops_before_max_bytes_and_says_so() -> None:
    out = io.BytesIO()
    result = Capture(CaptureWriter(out, {}), max_bytes=6000)
    payloads = [(b"p%03d:" % n) + b"x" * 95 for n in range(100)]
    hello = {"receiver": "receiver", "session": "receiver/1/1"}
    result.take(capture_wire.encode({**hello, "hello": ["udp://127.0.0.1:8125"]}), io.StringIO())
    result.take(capture_wire.encode({**hello, "burst": "udp://127.0.0.1:8125", "kind": "datagram", "connection": 0,
                                     "closed": False, "time": 1.0, "dropped": 0}, payloads), io.StringIO())
    result.writer.finish(result.trailer(5.0))
    assert len(out.getvalue()) <= 6000
    reader = CaptureReader(io.BytesIO(out.getvalue()), "x.cap")
    records = list(reader.records())
    assert [r.payload for r in records] == payloads[:len(records)]
    assert len(records) + result.left_out == len(payloads) and result.left_out > 0
    assert reader.trailer is not None and reader.trailer["ended"] == "max_bytes"
    assert summary(Path("x.cap"), result)[1] == (f"stopped at --max-bytes 6000: the file holds what came before "
                                                 f"({result.left_out} payloads after it were left out)")
