"""Stream connections are bounded and never lock out a new client: idle ones are closed after
``tcp_idle_timeout``, one peer holds at most ``tcp_max_connections_per_peer``, a new client at a limit
takes the longest-idle connection's place, and every close and refusal is counted."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pipeline import Pipeline, total
from harness.ports import free_port
from harness.sockets import closed_by_server
from harness.wait import wait_for
from stages.receiver.listeners.stream import EVICTABLE_AFTER_SECS, MAX_CONNECTIONS
from stages.rundir.figures import read_all

pytestmark = pytest.mark.e2e


def tcp_pipeline(**config: Any) -> tuple[Pipeline, int]:
    port = free_port()
    pipeline = Pipeline(config)
    pipeline.config["listeners"] = [*pipeline.config["listeners"], f"tcp://127.0.0.1:{port}"]
    pipeline.save_config()
    return pipeline, port


def receiver_figures(pipeline: Pipeline) -> dict[str, Any]:
    figures: dict[str, Any] = read_all(pipeline.run_dir).get("receiver", {}).get("figures", {})
    return figures


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def accounted(pipeline: Pipeline) -> int:
    """Connections the receiver holds, closed itself or refused: every one it took from the kernel."""
    figures = receiver_figures(pipeline)
    return int(figures.get("connections", 0) + sum(figures.get("connections_refused", {}).values())
               + sum(figures.get("connections_closed", {}).values()))


@contextlib.contextmanager
def idle_connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(connect(port))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def send_and_close(port: int, payload: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(payload)


def test_1024_idle_connections_do_not_lock_out_a_new_client() -> None:
    """The hostile trial's case, on the default config: 1,024 idle connections from this host."""
    pipeline, port = tcp_pipeline()
    with pipeline, idle_connections(port, MAX_CONNECTIONS) as idle:
        wait_for(lambda: accounted(pipeline) == len(idle), 20, "the receiver to admit or refuse every idle connection")
        last_connect = time.monotonic()
        # The rule under test: a connection idle this long may be closed for a new one.
        wait_for(lambda: time.monotonic() - last_connect > EVICTABLE_AFTER_SECS, 5, "the idle ones to be evictable")
        send_and_close(port, b"lockout.new:1|c\n" * 100)
        wait_for(lambda: total(pipeline.series("lockout.new")) >= 100, 15, "the new client's 100 lines")
        time.sleep(pipeline.flush_interval + 0.5)  # a straggler would show up in the next interval
        assert total(pipeline.series("lockout.new")) == 100
        assert total(pipeline.series("pystatsd.receiver.connections_closed", reason="peer_limit")) >= 1
        figures = receiver_figures(pipeline)
        assert figures["connections"] <= 256, "the default tcp_max_connections_per_peer"
        assert accounted(pipeline) == len(idle), "each idle connection open, closed or refused, counted once"


def test_at_the_global_limit_a_new_client_takes_the_longest_idle_ones_place() -> None:
    pipeline, port = tcp_pipeline(tcp_max_connections_per_peer=0)
    with pipeline, idle_connections(port, MAX_CONNECTIONS) as idle:
        wait_for(lambda: receiver_figures(pipeline).get("connections") == MAX_CONNECTIONS, 20,
                 "the receiver to hold every idle connection")
        last_connect = time.monotonic()
        wait_for(lambda: time.monotonic() - last_connect > EVICTABLE_AFTER_SECS, 5, "the idle ones to be evictable")
        send_and_close(port, b"limit.new:1|c\n" * 100)
        wait_for(lambda: total(pipeline.series("limit.new")) >= 100, 15, "the new client's 100 lines")
        # The first connection opened was idle longest: it made the room.
        wait_for(lambda: closed_by_server(idle[0]), 10, "the longest-idle connection to be closed")
        time.sleep(pipeline.flush_interval + 0.5)
        assert total(pipeline.series("limit.new")) == 100
        assert [s for s in idle if closed_by_server(s)] == [idle[0]]
        assert total(pipeline.series("pystatsd.receiver.connections_closed", reason="connection_limit")) == 1
        assert receiver_figures(pipeline)["connections_closed"] == {"connection_limit": 1}


def test_a_peer_holds_at_most_its_cap_and_every_refusal_is_counted() -> None:
    cap, extra = 4, 6
    pipeline, port = tcp_pipeline(tcp_max_connections_per_peer=cap, tcp_idle_timeout=0)
    with pipeline:
        socks = []
        try:
            # Each sends one line at once: a busy connection, which no new one may push out, so the
            # extra ones are refused (closed unread: their line lost, but counted).
            for _ in range(cap + extra):
                sock = connect(port)
                sock.sendall(b"peer.line:1|c\n")
                socks.append(sock)
            wait_for(lambda: accounted(pipeline) == cap + extra, 15, "every connection admitted or refused")
            figures = receiver_figures(pipeline)
            assert figures["connections"] == cap
            refused = figures["connections_refused"].get("peer_limit", 0)
            made_room = figures["connections_closed"].get("peer_limit", 0)
            assert refused + made_room == extra
            assert refused >= 1, "ten connects in well under a second: some cap connection was still busy"
            assert sum(closed_by_server(s) for s in socks) == extra
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: total(pipeline.series("peer.line")) + refused >= cap + extra, 15, "every line or refusal")
        time.sleep(pipeline.flush_interval + 0.5)
        # Sent = delivered + counted, exactly: a refused connection's line is the only one lost.
        assert total(pipeline.series("peer.line")) + refused == cap + extra
        assert total(pipeline.series("pystatsd.receiver.connections_refused", reason="peer_limit")) == refused


def test_an_idle_connection_is_closed_after_the_timeout_and_its_unfinished_line_counted() -> None:
    timeout = 1.5
    stream_path = Path(tempfile.mkdtemp(prefix="psi")) / "s.sock"
    pipeline, port = tcp_pipeline(tcp_idle_timeout=timeout)
    pipeline.config["listeners"].append(f"unix://{stream_path}")
    pipeline.save_config()
    with pipeline:
        over_tcp = connect(port)
        over_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        over_unix.connect(str(stream_path))
        try:
            started = time.monotonic()
            for sock in (over_tcp, over_unix):
                sock.sendall(b"idle.done:1|c\nidle.done:2|c\nidle.half:5")  # the last line unfinished
            wait_for(lambda: closed_by_server(over_tcp) and closed_by_server(over_unix), timeout + 10,
                     "both idle connections to be closed")
            assert time.monotonic() - started >= timeout
        finally:
            over_tcp.close()
            over_unix.close()
        wait_for(lambda: total(pipeline.series("idle.done")) >= 6, 15, "the complete lines")
        time.sleep(pipeline.flush_interval + 0.5)
        assert total(pipeline.series("idle.done")) == 6
        assert pipeline.series("idle.half") == []
        assert total(pipeline.series("pystatsd.receiver.bad_lines", reason="unfinished_line")) == 2
        assert total(pipeline.series("pystatsd.receiver.connections_closed", reason="idle_timeout")) == 2
