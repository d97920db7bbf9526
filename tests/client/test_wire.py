"""What the client puts on the wire, read by a plain UDP socket: formats, batching, failures, threads."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.paths import REPO
from pystatsd.client import Client

ORIGINAL_CONFIG = REPO / "tests" / "data" / "configs" / "original.yaml"


class Listener:
    """A UDP socket on a free port that collects datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])

    def datagrams(self) -> list[bytes]:
        received = []
        while True:
            try:
                received.append(self.sock.recv(65535))
            except TimeoutError:
                return received


@pytest.fixture
def listener() -> Iterator[Listener]:
    udp = Listener()
    yield udp
    udp.sock.close()


@pytest.fixture
def client(listener: Listener) -> Iterator[Client]:
    metrics = Client("127.0.0.1", listener.port)
    yield metrics
    metrics.close()


def original_accepts(datagram: bytes) -> dict[str, Any]:
    """The original daemon's rules: one JSON object per datagram within its 1024-byte buffer,
    ``metric_name`` and ``metric_type`` present, a counter's value in ``count``, a guage's in
    ``value``, a trace with neither; every other key a tag."""
    assert len(datagram) <= 1024, "the original read 1024 bytes and cut the rest"
    obj = json.loads(datagram)
    assert isinstance(obj, dict)
    assert isinstance(obj["metric_name"], str) and obj["metric_name"]
    kind = obj["metric_type"]
    assert kind in ("counter", "trace", "guage"), f"the original knew no {kind!r}"
    if kind == "counter":
        assert isinstance(obj["count"], (int, float)) and "value" not in obj
    elif kind == "guage":
        assert isinstance(obj["value"], (int, float)) and "count" not in obj
    else:
        assert "value" not in obj and "count" not in obj
    assert all(isinstance(v, str) for k, v in obj.items() if k not in ("metric_name", "metric_type", "value", "count"))
    return obj


def test_original_agent_calls_send_what_the_original_daemon_accepts(listener: Listener) -> None:
    with Client("127.0.0.1", listener.port, prefix="user", agent_config=ORIGINAL_CONFIG, host_tag=True) as agent:
        pass  # leaving the block with nothing batched sends nothing
    agent.trace("apptrace", stage="Init app")
    agent.guage("latency", 4.4, stage="Init app")
    agent.gauge("latency", 5)
    agent.incr("logins")
    agent.decr("logins", 2)
    agent.close()
    objects = [original_accepts(d) for d in listener.datagrams()]
    host = socket.gethostname()
    assert objects == [
        {"metric_name": "user.apptrace", "metric_type": "trace", "host": host, "environment": "stage",
         "role": "cfbroker", "stage": "Init app"},
        {"metric_name": "user.latency", "metric_type": "guage", "value": 4.4, "host": host, "environment": "stage",
         "role": "cfbroker", "stage": "Init app"},
        {"metric_name": "user.latency", "metric_type": "guage", "value": 5, "host": host, "environment": "stage",
         "role": "cfbroker"},
        {"metric_name": "user.logins", "metric_type": "counter", "count": 1, "host": host, "environment": "stage",
         "role": "cfbroker"},
        {"metric_name": "user.logins", "metric_type": "counter", "count": -2, "host": host, "environment": "stage",
         "role": "cfbroker"},
    ]


def test_tags_precedence(listener: Listener) -> None:
    client = Client("127.0.0.1", listener.port, tags={"role": "web", "env": "prod"}, agent_config=ORIGINAL_CONFIG,
                    host_tag=True)
    client.incr("x", env="canary", flag=True, n=3)
    client.close()
    (obj,) = [json.loads(d) for d in listener.datagrams()]
    assert obj["role"] == "web"  # the client's tags over the config's agent.tags
    assert obj["env"] == "canary"  # the call's over the client's
    assert (obj["environment"], obj["flag"], obj["n"]) == ("stage", "true", "3")


def test_statsd_lines(listener: Listener) -> None:
    client = Client("127.0.0.1", listener.port, prefix="app.", tags={"svc": "a|b,c"}, protocol="statsd")
    client.incr("hits", 5, route="/x")
    client.decr("hits")
    client.gauge("temp", 21.5)
    client.gauge("temp", -3)
    client.timing("rt", 12.5)
    client.histogram("size", 300)
    client.distribution("lat", 0.25)
    client.set("users", "alice")
    client.trace("boot")
    client.close()
    assert listener.datagrams() == [
        b"app.hits:5|c|#svc:a_b_c,route:/x",
        b"app.hits:-1|c|#svc:a_b_c",
        b"app.temp:21.5|g|#svc:a_b_c",
        # A signed value would change the gauge: set 0, then subtract, in one datagram.
        b"app.temp:0|g|#svc:a_b_c\napp.temp:-3|g|#svc:a_b_c",
        b"app.rt:12.5|ms|#svc:a_b_c",
        b"app.size:300|h|#svc:a_b_c",
        b"app.lat:0.25|d|#svc:a_b_c",
        b"app.users:alice|s|#svc:a_b_c",
        # statsd has no trace type: it goes as JSON, which pystatsd detects per datagram.
        b'{"metric_name":"app.boot","metric_type":"trace","svc":"a|b,c"}',
    ]


def test_sample_rates(listener: Listener, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0.1, 0.9, 0.1])
    monkeypatch.setattr(random, "random", lambda: next(draws))
    client.incr("sampled", rate=0.5)  # 0.1 < 0.5: sent, with its rate
    client.incr("sampled", rate=0.5)  # 0.9: skipped, as the rate says
    client.timing("sampled.t", 3, rate=0.5)
    client.incr("always")  # rate 1 draws nothing
    client.close()
    objects = [json.loads(d) for d in listener.datagrams()]
    assert [(o["metric_name"], o.get("sample_rate")) for o in objects] == [
        ("sampled", 0.5), ("sampled.t", 0.5), ("always", None)]
    assert (client.sent, client.errors) == (3, 0)


def test_timer_as_context_manager_and_decorator(listener: Listener, client: Client) -> None:
    with client.timer("block", step="one") as timer:
        time.sleep(0.05)
    assert timer.ms is not None and timer.ms >= 50

    @client.timer("call")
    def work(x: int) -> int:
        time.sleep(0.02)
        return x * 2

    assert work(21) == 42
    assert work.__name__ == "work"
    with pytest.raises(ZeroDivisionError):
        with client.timer("failing"):
            1 / 0  # noqa: B018 - the block raises; it is timed all the same
    client.close()
    objects = [json.loads(d) for d in listener.datagrams()]
    assert [(o["metric_name"], o["metric_type"]) for o in objects] == [
        ("block", "timer"), ("call", "timer"), ("failing", "timer")]
    assert objects[0]["value"] >= 50 and objects[0]["step"] == "one"
    assert objects[1]["value"] >= 20


@pytest.mark.parametrize("protocol", ["json", "statsd"])
def test_batches_fill_datagrams_up_to_the_limit(listener: Listener, protocol: str) -> None:
    client = Client("127.0.0.1", listener.port, protocol=protocol, max_datagram=512)
    with client:
        for i in range(100):
            client.incr("batched", i=i)
        assert 0 < client.sent < 100, "full datagrams leave at once, the last waits for the block's end"
    client.close()
    datagrams = listener.datagrams()
    assert 1 < len(datagrams) < 100
    assert all(len(d) <= 512 for d in datagrams)
    lines = [line for d in datagrams for line in d.split(b"\n")]
    assert len(lines) == 100 and client.sent == 100
    if protocol == "json":
        assert sorted(int(json.loads(line)["i"]) for line in lines) == list(range(100))


def test_batch_mode_sends_on_flush(listener: Listener) -> None:
    client = Client("127.0.0.1", listener.port, batch=True)
    client.gauge("a", 1)
    client.gauge("b", 2)
    assert listener.datagrams() == []
    client.flush()
    assert listener.datagrams() == [b'{"metric_name":"a","metric_type":"guage","value":1}\n'
                                    b'{"metric_name":"b","metric_type":"guage","value":2}']
    client.close()


def test_failures_are_counted_never_raised(listener: Listener, client: Client,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pystatsd.client"):
        client.gauge("nan", float("nan"))
        client.gauge("text", "12")  # type: ignore[arg-type]
        client.gauge("flag", True)
        client.incr("rate", rate=0)
        client.incr("")
        client.trace("reserved", value="x")
        client.set("empty", "")
        # Larger than any UDP datagram: the kernel refuses it.
        client.incr("huge", big="x" * 70000)
    assert (client.sent, client.errors) == (0, 8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, "each kind of failure is a warning once, then debug"
    client.incr("fine")
    client.close()
    assert [json.loads(d)["metric_name"] for d in listener.datagrams()] == ["fine"]


def test_an_unresolvable_host_is_counted(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_such_host(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    client = Client("metrics.invalid", 5090)
    with caplog.at_level(logging.WARNING, logger="pystatsd.client"):
        client.incr("lost")
        with client:
            client.incr("lost")
            client.incr("lost")
    client.close()
    assert (client.sent, client.errors) == (0, 3)


def test_bad_client_arguments_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="protocol"):
        Client(protocol="xml")
    with pytest.raises(ValueError, match="port"):
        Client(port=0)
    with pytest.raises(ValueError, match="max_datagram"):
        Client(max_datagram=70000)
    with pytest.raises(ValueError, match="count"):
        Client(tags={"count": "1"})


def test_threads_share_one_client(listener: Listener) -> None:
    client = Client("127.0.0.1", listener.port, batch=True, max_datagram=1400)
    received: list[bytes] = []
    collector = threading.Thread(target=lambda: received.extend(_collect(listener, 1.0)))
    collector.start()

    def send(thread: int) -> None:
        for i in range(250):
            client.incr("threaded", thread=thread, i=i)
            if i % 50 == 0:
                client.flush()

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    collector.join()
    objects = [json.loads(line) for d in received for line in d.split(b"\n")]
    assert sorted((int(o["thread"]), int(o["i"])) for o in objects) == [(t, i) for t in range(8) for i in range(250)]
    assert (client.sent, client.errors) == (2000, 0)


def _collect(listener: Listener, quiet: float) -> list[bytes]:
    """Datagrams until none came for ``quiet`` seconds (the socket buffer would drop a burst otherwise)."""
    received = []
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        try:
            received.append(listener.sock.recv(65535))
            last = time.monotonic()
        except TimeoutError:
            pass
    return received
