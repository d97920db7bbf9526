"""Every client call against the running daemon (1 s interval, two shards), in both protocols:
everything is sent within one interval, then each test reads its aggregates from the file sink."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from harness.pipeline import Pipeline, running_pipeline, total
from pystatsd.client import Client

pytestmark = pytest.mark.e2e

PROTOCOLS = ["json", "statsd"]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    yield from running_pipeline()


@pytest.fixture(scope="module")
def sent(pipeline: Pipeline) -> dict[str, Client]:
    """Send one of everything with a client per protocol (prefixed by its name); wait for the lot."""
    clients = {protocol: Client("127.0.0.1", pipeline.port if protocol == "json" else pipeline.statsd_port,
                                prefix=protocol, protocol=protocol, tags={"app": "shop"}, host_tag=True)
               for protocol in PROTOCOLS}
    real_random = random.random
    random.random = lambda: 0.0  # every sampled call is sent, at its rate
    try:
        pipeline.wait_interval_start()
        for client in clients.values():
            client.incr("hits", 5, route="/a")
            client.incr("hits", route="/a")
            client.decr("hits", 2, route="/a")
            client.incr("sampled", rate=0.25)
            client.gauge("temp", 21.5)
            client.guage("temp", -3)
            for _ in range(3):
                client.trace("boot", stage="Init app")
            client.timing("rt", 10)
            client.timing("rt", 30, rate=0.5)
            with client.timer("block"):
                pass
            client.timer("call")(lambda: None)()
            client.histogram("size", 100)
            client.histogram("size", 300)
            for value in (1, 2, 3):
                client.distribution("lat", value)
            for member in ("alice", "bob", "alice"):
                client.set("users", member)
            with client:
                for _ in range(200):
                    client.incr("batched")
            client.incr("last")
    finally:
        random.random = real_random
        for client in clients.values():
            client.close()
    for protocol in PROTOCOLS:
        pipeline.wait_series(f"{protocol}.last", settle=False)
    pipeline.wait_series(f"{PROTOCOLS[-1]}.last")  # and one more interval for stragglers
    return clients


def series(pipeline: Pipeline, protocol: str, name: str) -> list[dict[str, Any]]:
    found = pipeline.series(f"{protocol}.{name}")
    assert found, f"no aggregate of {protocol}.{name}"
    return found


def stats(aggregates: list[dict[str, Any]]) -> dict[str, float]:
    (aggregate,) = aggregates
    return aggregate["stats"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_lost_and_tags_kept(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    assert sent[protocol].errors == 0
    (hits,) = series(pipeline, protocol, "hits")
    assert hits["tags"] == {"app": "shop", "host": socket.gethostname(), "route": "/a"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_counters(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    assert total(series(pipeline, protocol, "hits")) == 4  # 5 + 1 - 2
    assert total(series(pipeline, protocol, "sampled")) == 4  # one call at rate 0.25
    assert total(series(pipeline, protocol, "batched")) == 200


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gauge_and_guage(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    gauges = series(pipeline, protocol, "temp")
    assert {g["type"] for g in gauges} == {"gauge"}
    assert {g["value"] for g in gauges} == {-3}, "a negative gauge is set, not subtracted"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trace(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    traces = series(pipeline, protocol, "boot")
    assert {t["type"] for t in traces} == {"trace"}
    assert total(traces) == 3
    assert traces[0]["tags"]["stage"] == "Init app"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timing_and_timer(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    rt = stats(series(pipeline, protocol, "rt"))
    assert (rt["count"], rt["sum"], rt["min"], rt["max"]) == (3, 40, 10, 30)  # 30 at rate 0.5 counts twice
    for name in ("block", "call"):
        timer = series(pipeline, protocol, name)
        assert timer[0]["type"] == "timer" and stats(timer)["count"] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_histogram_and_distribution(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    size = stats(series(pipeline, protocol, "size"))
    assert (size["count"], size["sum"], size["min"], size["max"]) == (2, 400, 100, 300)
    lat = series(pipeline, protocol, "lat")
    assert lat[0]["type"] == "distribution"
    assert (stats(lat)["count"], stats(lat)["median"]) == (3, 2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set(pipeline: Pipeline, sent: dict[str, Client], protocol: str) -> None:
    (users,) = series(pipeline, protocol, "users")
    assert (users["type"], users["value"]) == ("set", 2)
