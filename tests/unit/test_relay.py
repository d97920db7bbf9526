"""The raw relay's destinations on loopback sockets: what the kernel takes arrives as packed, and every
line a destination did not get is counted by reason, a down one costing no send while it stays down."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from harness.ports import free_port
from harness.sockets import loopback_udp
from stages.receiver.relay import PROBE_SECS, RETRY_SECS, Relay

LINES = [f"relay.{i}:{i}|c|#k:v".encode() for i in range(100)]


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    with loopback_udp(5) as sock:
        yield sock


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting, empty ones (probes) left out."""
    datagrams = []
    sock.setblocking(False)
    while True:
        try:
            datagram = sock.recv(65536)
        except BlockingIOError:
            return [d for d in datagrams if d]
        datagrams.append(datagram)


def test_every_line_arrives_unchanged_in_datagrams_of_at_most_the_limit(sink: socket.socket) -> None:
    port = sink.getsockname()[1]
    relay = Relay([f"udp://127.0.0.1:{port}", f"udp://127.0.0.1:{port}"], 200, now=0.0)
    relay.forward(LINES[:50], 1.0)
    relay.forward([b"\n".join(LINES[50:])], 1.1)
    datagrams = received(sink)
    assert all(len(d) <= 200 for d in datagrams)
    lines = [line for d in datagrams for line in d.split(b"\n")]
    assert sorted(lines) == sorted(LINES * 2)  # each line once per destination
    assert [d.datagrams for d in relay.destinations] == [len(datagrams) // 2] * 2
    assert [d.dropped for d in relay.destinations] == [{}, {}]
    relay.close()


def test_a_destination_with_nothing_bound_counts_every_line_and_is_sent_to_once_it_is_up() -> None:
    port = free_port()
    relay = Relay([f"udp://127.0.0.1:{port}"], 1432, now=0.0)
    (destination,) = relay.destinations
    sent = []
    real_send = destination.sock.send  # type: ignore[union-attr]

    def counting_send(data: bytes) -> int:
        sent.append(data)
        return real_send(data)

    destination.sock = SendSpy(destination.sock, counting_send)  # type: ignore[assignment]
    relay.forward(LINES[:40], 1.0)  # refused at the first send (the start's probe was refused)
    relay.forward(LINES[40:60], 1.5)  # down: counted, not sent
    assert destination.dropped == {"unreachable": 60}
    assert len(sent) == 1 and destination.datagrams == 0
    relay.forward(LINES[60:70], 1.0 + RETRY_SECS)  # the retry's probe goes; still counted
    relay.forward(LINES[70:80], 1.0 + RETRY_SECS + PROBE_SECS)  # the probe was refused: down again
    assert sent[1:] == [b""]
    assert destination.dropped == {"unreachable": 80}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.bind(("127.0.0.1", port))
        at = 1.0 + 2 * RETRY_SECS + PROBE_SECS
        relay.forward(LINES[80:90], at)  # probed
        relay.forward(LINES[90:], at + PROBE_SECS)  # up again: sent
        up.settimeout(5)
        assert [up.recv(65536) for _ in range(2)] == [b"", b"\n".join(LINES[90:])]
    assert destination.dropped == {"unreachable": 90}
    assert destination.datagrams == 1
    relay.close()


def test_a_name_that_does_not_resolve_counts_its_lines_and_lines_too_long_for_udp_count_everywhere(
        sink: socket.socket) -> None:
    port = sink.getsockname()[1]
    relay = Relay(["udp://no-such-host.invalid:8125", f"udp://127.0.0.1:{port}"], 1432, now=0.0)
    relay.forward([b"a:1|c\nb:1|c", b"h:1|c|#" + b"t" * 65507], 1.0)
    assert [d.dropped for d in relay.destinations] == [{"unresolved": 2, "too_long": 1}, {"too_long": 1}]
    assert received(sink) == [b"a:1|c\nb:1|c"]
    relay.close()


def test_a_full_send_buffer_drops_the_rest_of_that_read_and_the_next_read_is_sent(sink: socket.socket) -> None:
    relay = Relay([f"udp://127.0.0.1:{sink.getsockname()[1]}"], 30, now=0.0)
    (destination,) = relay.destinations
    calls = []

    def full_after_two(data: bytes) -> int:
        calls.append(data)
        if len(calls) == 3:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return len(data)

    destination.sock = SendSpy(destination.sock, full_after_two)  # type: ignore[arg-type, assignment]
    relay.forward(LINES[:10], 1.0)  # 10 lines of about 17 bytes: one a datagram at a limit of 30
    assert (len(calls), destination.datagrams, destination.dropped) == (3, 2, {"buffer_full": 8})
    relay.forward(LINES[10:12], 1.0)  # not down: sent
    assert (len(calls), destination.datagrams, destination.dropped) == (5, 4, {"buffer_full": 8})
    relay.close()


class SendSpy:
    """A socket whose send is watched (a socket's own methods cannot be replaced)."""

    def __init__(self, sock: socket.socket, send: object) -> None:
        self._sock = sock
        self.send = send

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)
