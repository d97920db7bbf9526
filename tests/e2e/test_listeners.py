"""TCP, Unix datagram and Unix stream listeners, end to end under supervisord."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from datadog.dogstatsd import DogStatsd

from harness.pipeline import Pipeline, total
from harness.ports import free_port
from harness.wait import wait_for
from stages.receiver.listeners.unixgram import RECOMMENDED_DGRAM_QLEN

pytestmark = pytest.mark.e2e


class Listeners:
    def __init__(self) -> None:
        # Short: a Unix socket path must stay under ~100 characters.
        self.dir = Path(tempfile.mkdtemp(prefix="psl"))
        self.tcp_port = free_port()
        self.dsd_path = self.dir / "dsd.sock"
        self.stream_path = self.dir / "stream.sock"

    def urls(self, statsd_port: int) -> list[str]:
        return [f"udp://127.0.0.1:{statsd_port}", f"tcp://127.0.0.1:{self.tcp_port}",
                f"unixgram://{self.dsd_path}", f"unix://{self.stream_path}"]


@pytest.fixture(scope="module")
def listeners() -> Listeners:
    return Listeners()


@pytest.fixture(scope="module")
def pipeline(listeners: Listeners) -> Iterator[Pipeline]:
    pipeline = Pipeline()
    pipeline.config["listeners"] = listeners.urls(pipeline.statsd_port)
    pipeline.config["unix_socket_mode"] = "0620"
    pipeline.save_config()
    with pipeline:
        yield pipeline


def tcp(listeners: Listeners) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listeners.tcp_port), timeout=10)


def test_datadog_client_over_its_unix_socket(pipeline: Pipeline, listeners: Listeners) -> None:
    assert listeners.dsd_path.stat().st_mode & 0o777 == 0o620
    client = DogStatsd(socket_path=str(listeners.dsd_path), disable_telemetry=True)
    pipeline.wait_interval_start()
    for _ in range(4):
        client.increment("uds.hits", tags=["via:uds"])
    client.gauge("uds.level", 3.5, tags=["via:uds"])
    for value in (1, 2, 3):
        client.histogram("uds.size", value)
    client.flush()
    client.close_socket()
    assert [a["value"] for a in pipeline.wait_series("uds.hits", via="uds")] == [4]
    assert {a["value"] for a in pipeline.series("uds.level")} == {3.5}
    (size,) = pipeline.series("uds.size")
    assert (size["stats"]["count"], size["stats"]["sum"]) == (3, 6)


def unixgram_sender(listeners: Listeners, blocking: bool) -> socket.socket:
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(listeners.dsd_path))
    sender.setblocking(blocking)
    return sender


def datadog_rounds(pipeline: Pipeline, listeners: Listeners, name: str,
                   send: Callable[[DogStatsd, str], None]) -> list[tuple[float, int]]:
    """Three rounds of ``send`` from the client as a user makes it (defaults: one datagram per metric,
    sent without blocking; a datagram the socket refuses, EAGAIN, is dropped and counted in
    packets_dropped_writer): each round's (delivered, refused). Three, because a round can meet a
    CPU that other work holds for a millisecond; what is refused is then the client's to count."""
    rounds = []
    for round_ in range(3):
        client = DogStatsd(socket_path=str(listeners.dsd_path))
        pipeline.wait_interval_start()
        send(client, f"{name}.{round_}")
        refused = client.packets_dropped_writer
        client.close_socket()
        rounds.append((total(pipeline.wait_series(f"{name}.{round_}")), refused))
    return rounds


def test_datadog_bursts_the_kernels_unixgram_queue_can_hold_arrive_whole(pipeline: Pipeline,
                                                                          listeners: Listeners) -> None:
    # The kernel queues at most net.unix.max_dgram_qlen datagrams (10 by default) for the socket.
    # Bursts of 8 every half millisecond fit that queue only if each is read before the next two
    # meet: a receiver that paused 1 ms after a small read (or sent a window to the shards
    # meanwhile) refused about 27 % of them in every round.
    def paced(client: DogStatsd, name: str) -> None:
        for _ in range(250):
            for _ in range(8):
                client.increment(name)
            time.sleep(0.0005)

    rounds = datadog_rounds(pipeline, listeners, "uds.paced", paced)
    assert all(delivered + refused == 2000 for delivered, refused in rounds), rounds
    assert (2000, 0) in rounds, rounds


def test_what_a_unixgram_socket_refuses_a_sender_sees_and_the_rest_arrives(pipeline: Pipeline,
                                                                           listeners: Listeners) -> None:
    # A sender that does not block gets EAGAIN when the kernel's queue is full: what is lost is lost
    # on its side, visibly; everything the kernel accepted reaches the aggregate.
    pipeline.wait_interval_start()
    refused = 0
    with unixgram_sender(listeners, blocking=False) as sender:
        for _ in range(5000):
            try:
                sender.send(b"uds.nonblocking:1|c")
            except BlockingIOError:
                refused += 1
    assert total(pipeline.wait_series("uds.nonblocking")) == 5000 - refused


def test_a_burst_of_500_datadog_increments_over_the_unix_socket_is_delivered_or_refused_to_the_client(
        pipeline: Pipeline, listeners: Listeners) -> None:
    # 500 in a loop take about 2.5 ms, the kernel queue's ten slots about 50 us: the reader thread
    # empties it as it fills (on a quiet machine every burst arrives whole), but on a busy one the
    # kernel refuses what it has no slot for. The client is told (EAGAIN: it counts it as dropped),
    # so each metric is delivered or refused to its sender, never lost unaccounted.
    def burst(client: DogStatsd, name: str) -> None:
        for _ in range(500):
            client.increment(name)

    rounds = datadog_rounds(pipeline, listeners, "uds.burst", burst)
    assert all(delivered + refused == 500 for delivered, refused in rounds), rounds


def test_the_log_says_when_the_kernels_unixgram_queue_is_short(pipeline: Pipeline, listeners: Listeners) -> None:
    qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    warned = f"unixgram://{listeners.dsd_path}: the kernel queues at most {qlen} datagrams" in pipeline.log("receiver")
    assert warned == (qlen < RECOMMENDED_DGRAM_QLEN)
    assert ("sysctl -w net.unix.max_dgram_qlen=" in pipeline.log("receiver")) == warned
    # Its receive buffer bounds nothing (the queue is counted in datagrams): no advice about rmem_max.
    assert f"Listening on unixgram://{listeners.dsd_path} with a" not in pipeline.log("receiver")


def test_100000_tcp_lines_over_several_connections_arrive_exactly(pipeline: Pipeline,
                                                                     listeners: Listeners) -> None:
    def send(connection_id: int) -> None:
        with tcp(listeners) as conn:
            # Lines straddle the 4 KiB writes, so the listener must join the pieces of a line.
            payload = b"".join(f"tcp.lines:1|c|#conn:{connection_id}\n".encode() for _ in range(25_000))
            for start in range(0, len(payload), 4096):
                conn.sendall(payload[start:start + 4096])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        wait_for(lambda i=i: total(pipeline.series("tcp.lines", conn=str(i))) == 25_000, 15,
                 f"connection {i}'s 25,000 lines")
    time.sleep(pipeline.flush_interval + 0.5)
    assert total(pipeline.series("tcp.lines")) == 100_000


def test_idle_and_half_sent_connections_hold_nothing_up(pipeline: Pipeline, listeners: Listeners) -> None:
    idle = tcp(listeners)
    half = tcp(listeners)
    half.sendall(b"tcp.half:5|c")  # no newline yet: not a complete line
    try:
        with tcp(listeners) as busy:
            busy.sendall(b"tcp.busy:1|c\ntcp.busy:2|c\n")
        assert total(pipeline.wait_series("tcp.busy", settle=False)) == 3
        assert pipeline.series("tcp.half") == []
    finally:
        idle.close()
        half.close()  # the peer's last line needs no newline
    assert total(pipeline.wait_series("tcp.half")) == 5


def test_line_too_long_is_counted_and_its_neighbours_survive(pipeline: Pipeline, listeners: Listeners) -> None:
    with tcp(listeners) as conn:
        conn.sendall(b"tcp.long.before:1|c\n" + b"x" * 70_000 + b":1|c\ntcp.long.after:1|c\n")
    assert total(pipeline.wait_series("tcp.long.after")) == 1
    assert total(pipeline.series("tcp.long.before")) == 1
    assert total(pipeline.series("pystatsd.receiver.bad_lines", reason="line_too_long")) == 1


def test_unix_stream_socket(pipeline: Pipeline, listeners: Listeners) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(listeners.stream_path))
        conn.sendall(b'stream.c:2|c|#k:v\n{"metric_name": "stream.trace", "metric_type": "trace"}\n')
    assert [a["value"] for a in pipeline.wait_series("stream.c", k="v")] == [2]
    assert total(pipeline.series("stream.trace")) == 1


def test_listener_on_a_taken_port_stops_the_receiver_with_the_url_named() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pipeline = Pipeline({"listeners": [f"tcp://127.0.0.1:{port}"]})
        try:
            pipeline.start(wait_running=False)
            # FATAL when it failed within startsecs (1 s); on a busy machine it gets there later, and its exit
            # 78 is then an expected one (EXITED): given up on either way (tests/e2e/test_start_failures.py).
            wait_for(lambda: pipeline.status().get("receiver", ("",))[0] in ("FATAL", "EXITED"), 40,
                     "the receiver to give up")
            assert f"cannot listen on tcp://127.0.0.1:{port}: Address already in use" in pipeline.log("receiver")
        finally:
            pipeline.stop()
            pipeline.cleanup()



def test_extra_receivers_share_the_ports_and_only_the_first_serves_unix_sockets() -> None:
    listeners = Listeners()
    pipeline = Pipeline(extra_receivers=1)
    pipeline.config["listeners"] = listeners.urls(pipeline.statsd_port)
    pipeline.save_config()
    with pipeline:
        assert pipeline.status().keys() >= {"receiver", "receiver-extra:receiver-1"}
        assert listeners.dsd_path.exists()
        assert "unixgram" not in pipeline.log("receiver-1")
        # The kernel picks a receiver per client address and port: 32 clients reach both.
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
        for _ in range(25):
            for client in clients:
                client.sendto(b"shared.hits:1|c", ("127.0.0.1", pipeline.statsd_port))
        for client in clients:
            client.close()
        for _ in range(5):
            with tcp(listeners) as conn:
                conn.sendall(b"shared.tcp:2|c\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
            unix.sendto(b"shared.unix:3|c", str(listeners.dsd_path))
        assert total(pipeline.wait_series("shared.unix")) == 3
        wait_for(lambda: total(pipeline.series("shared.hits")) == 800, 15, "every datagram to be counted")
        wait_for(lambda: total(pipeline.series("shared.tcp")) == 10, 15, "every TCP line to be counted")
        by_receiver = {name: total(pipeline.series("pystatsd.receiver.datagrams", receiver=name))
                       for name in ("receiver", "receiver-1")}
        assert all(by_receiver.values()), by_receiver

        pipeline.ctl("restart", "receiver-extra:receiver-1", check=True)
        wait_for(pipeline.all_running, 30, "receiver-1 to be RUNNING again")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for _ in range(40):
                client.sendto(b"shared.after:1|c", ("127.0.0.1", pipeline.statsd_port))
        wait_for(lambda: total(pipeline.series("shared.after")) == 40, 15, "the datagrams after the restart")
