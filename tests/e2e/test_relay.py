"""The raw relay through a real pipeline: every line read on every listener (UDP, TCP, Unix datagram and
stream) arrives byte-identical at a UDP socket on loopback, bad lines and lines the rules drop too; a
reload moves it to another destination; a destination with nothing bound costs the pipeline nothing
and every line it did not get is counted."""

from __future__ import annotations

import collections
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.pipeline import Pipeline, total
from harness.ports import free_port
from harness.wait import wait_for
from stages.rundir.figures import read_all

pytestmark = pytest.mark.e2e

BIG = b"\n".join(b"relay.big.%d:1|c|#k:v" % i for i in range(80))  # about 1.7 KB: cut in two
UDP = [b"relay.kept:1|c\ndrop.me:1|c\nnot a line at all", BIG, b"relay.bad\xff:1|c\nrelay.kept:2|c|@0.5\n",
       b"relay.nan:nan|g"]
TCP = b"relay.tcp:1|c\ndrop.tcp:1|c\n"
UNIX = b"relay.unix:2|c\nrelay.unix:x|c\n"
UNIXGRAM = b"relay.ugram:3|c"
RULES = [{"match": "drop.*", "drop": True}]


class Sink:
    """A plain UDP socket on loopback that keeps every line it is sent."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.url = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.datagrams: list[bytes] = []

    def lines(self) -> collections.Counter[bytes]:
        while True:
            try:
                datagram = self.sock.recv(65536)
            except BlockingIOError:
                break
            if datagram:  # an empty one is the relay's probe
                self.datagrams.append(datagram)
        return collections.Counter(line for d in self.datagrams for line in d.split(b"\n") if line)


def lines_of(*payloads: bytes) -> collections.Counter[bytes]:
    return collections.Counter(line for p in payloads for line in p.split(b"\n") if line)


@pytest.fixture
def sinks() -> Iterator[tuple[Sink, Sink]]:
    pair = (Sink(), Sink())
    yield pair
    for sink in pair:
        sink.sock.close()


def relay_figures(pipeline: Pipeline) -> dict[str, Any]:
    figures: dict[str, Any] = read_all(pipeline.run_dir).get("receiver", {}).get("figures", {}).get("relay", {})
    return figures


def own_total(pipeline: Pipeline, name: str, **tags: str) -> float:
    return total(pipeline.series(f"pystatsd.receiver.{name}", **tags))


def test_every_line_read_on_every_listener_arrives_unchanged_and_a_reload_moves_it(sinks: tuple[Sink, Sink]) -> None:
    first, second = sinks
    directory = Path(tempfile.mkdtemp(prefix="psr"))
    tcp_port = free_port()
    unix, unixgram = directory / "s.sock", directory / "d.sock"
    pipeline = Pipeline(config={"rules": RULES, "relay": [first.url]})
    pipeline.config["listeners"] += [f"tcp://127.0.0.1:{tcp_port}", f"unix://{unix}", f"unixgram://{unixgram}"]
    pipeline.save_config()
    with pipeline:
        for payload in UDP:
            pipeline.send(payload, pipeline.statsd_port)
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as tcp:
            tcp.sendall(TCP)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
            stream.connect(str(unix))
            stream.sendall(UNIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dgram:
            dgram.sendto(UNIXGRAM, str(unixgram))
        sent = lines_of(*UDP, TCP, UNIX, UNIXGRAM)
        wait_for(lambda: first.lines() == sent, 10, f"every line at the relay's destination: {sent}")
        assert all(len(d) <= 1432 for d in first.datagrams)
        # The pipeline itself parsed them as ever: the rule dropped drop.*, the bad lines were counted.
        wait_for(lambda: own_total(pipeline, "rule_dropped", rule="rules[0]") == 2, 10, "the rule's drops")
        assert total(pipeline.series("relay.kept")) == 5
        destination = first.url.partition("://")[2]
        wait_for(lambda: relay_figures(pipeline).get(destination) == {"datagrams": len(first.datagrams),
                                                                      "dropped": {}}, 10, "the relay's figures")
        wait_for(lambda: own_total(pipeline, "relay_datagrams", destination=destination) == len(first.datagrams),
                 10, "the relay's self-metric")
        assert f"relay {destination} {len(first.datagrams)} datagrams, dropped lines 0" in \
            pipeline.pystatsd("status").stdout

        # A reload: the next datagram read goes to the new destination only.
        pipeline.config["relay"] = [second.url]
        pipeline.save_config()
        assert pipeline.pystatsd("reload").returncode == 0
        pipeline.send(b"relay.after:1|c", pipeline.statsd_port)
        wait_for(lambda: second.lines() == lines_of(b"relay.after:1|c"), 10, "the line at the new destination")
        time.sleep(0.2)  # what the old destination would have been sent is on loopback by now
        assert first.lines() == sent


def test_a_destination_with_nothing_bound_costs_nothing_and_every_line_it_missed_is_counted() -> None:
    port = free_port()  # nothing bound: the kernel refuses (ECONNREFUSED on loopback)
    destination = f"127.0.0.1:{port}"
    with Pipeline(config={"relay": [f"udp://{destination}"]}) as pipeline:
        pipeline.wait_interval_start()
        datagrams = [b"\n".join(b"relay.down.%d:1|c" % (i * 10 + j) for j in range(10)) for i in range(200)]
        for datagram in datagrams:
            pipeline.send(datagram, pipeline.statsd_port)
        wait_for(lambda: own_total(pipeline, "relay_dropped", destination=destination, reason="unreachable")
                 == 2000, 15, "every line counted")
        assert relay_figures(pipeline)[destination] == {"datagrams": 0, "dropped": {"unreachable": 2000}}
        # Each metric delivered once by the pipeline itself, and nothing lost on the way.
        wait_for(lambda: len([a for a in pipeline.aggregates() if a["name"].startswith("relay.down.")]) == 2000,
                 15, "every series delivered")
        assert total([a for a in pipeline.aggregates() if a["name"].startswith("relay.down.")]) == 2000
        assert [loss for loss in pipeline.counted_losses() if "relay_dropped" not in loss] == []
