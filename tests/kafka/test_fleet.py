"""The fleet tier against the real broker: three edges (format: partials) into a topic of four
partitions, two fleet processes in one consumer group, exact fleet totals and percentiles, and a
fleet process killed with SIGKILL mid-interval."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from stages.aggregator.fleet import FLEET_TAG
from stages.aggregator.stats import summary
from stages.figures import read_all

pytestmark = pytest.mark.kafka

HOSTS = ("edge-a", "edge-b", "edge-c")
PARTITIONS = 4


def fleet_tier(broker: Any, topic: str, group: str) -> Pipeline:
    """Two fleet processes (shards) in one group; its file sink holds the fleet aggregates."""
    return Pipeline({"input": {"kafka": {"kafka_broker": broker.bootstrap, "kafka_topic": topic, "group": group,
                                         "lateness_seconds": 2.0}},
                     "self_metrics_prefix": ""}, shards=2)


def edge(broker: Any, topic: str, host: str) -> Pipeline:
    pipeline = Pipeline({"agent": {"host": host, "tags": {"env": "test"}}, "self_metrics_prefix": ""}, shards=2)
    pipeline.config["forwarders"]["kafka"] = {"kafka_broker": broker.bootstrap, "kafka_topic": topic,
                                              "format": "partials", "linger_ms": 5}
    pipeline.save_config()
    return pipeline


def assigned(fleet: Pipeline) -> list[int]:
    records = read_all(fleet.run_dir)
    return sorted(p for name, record in records.items() if name.startswith("aggregator")
                  for p in record["figures"].get("partitions", []))


@pytest.fixture
def tier(kafka_broker: Any, request: pytest.FixtureRequest) -> Iterator[tuple[Pipeline, list[Pipeline]]]:
    topic = f"partials-{request.node.name[-20:]}"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    fleet = fleet_tier(kafka_broker, topic, f"group-{request.node.name[-20:]}")
    edges = [edge(kafka_broker, topic, host) for host in HOSTS]
    started: list[Pipeline] = []
    try:
        fleet.start()
        started.append(fleet)
        try:
            wait_for(lambda: assigned(fleet) == list(range(PARTITIONS)), 60,
                     "the two fleet processes to own the four partitions", every=0.5)
        except AssertionError:
            raise AssertionError("\n".join(fleet.log(f"aggregator-{k}")[-3000:] for k in range(2))) from None
        for pipeline in edges:
            pipeline.start()
            started.append(pipeline)
        yield fleet, edges
    finally:
        for pipeline in started:
            pipeline.stop()
        for pipeline in [fleet, *edges]:
            pipeline.cleanup()


def fleet_totals(fleet: Pipeline, name: str) -> dict[float, set[float]]:
    """Interval → the values flushed for it (a flush re-sent after a crash gives the same value again)."""
    values: dict[float, set[float]] = defaultdict(set)
    for aggregate in fleet.series(name, **{FLEET_TAG[0]: FLEET_TAG[1]}):
        values[aggregate["timestamp"]].add(aggregate["value"])
    return values


def exact_total(fleet: Pipeline, name: str) -> float:
    totals = fleet_totals(fleet, name)
    assert all(len(v) == 1 for v in totals.values()), f"an interval flushed twice with other values: {totals}"
    return sum(next(iter(v)) for v in totals.values())


def send_steadily(edges: list[Pipeline], secs: float, kill: Any = None) -> int:
    traffic = [SteadyTraffic(p.statsd_port, {"c": "fleet.hits:1|c|#route:home"}, every_secs=0.005, max_secs=60)
               for p in edges]
    for t in traffic:
        t.__enter__()
    try:
        time.sleep(secs / 2)
        if kill is not None:
            kill()
        time.sleep(secs / 2)
    finally:
        for t in traffic:
            t.__exit__()
    return sum(t.total for t in traffic)


def test_fleet_counter_totals_are_exact_and_one_series_over_every_host(tier: tuple[Pipeline, list[Pipeline]]) -> None:
    fleet, edges = tier
    sent = send_steadily(edges, 6)
    wait_for(lambda: exact_total(fleet, "fleet.hits") == sent, 30,
             f"the fleet total to reach the {sent} increments sent", every=0.5)
    time.sleep(3)  # nothing more comes: no interval is counted twice
    assert exact_total(fleet, "fleet.hits") == sent
    tags = fleet.series("fleet.hits")[0]["tags"]
    # The edges' agent.tags are the series' own; the host is not among them.
    assert tags == {"route": "home", "env": "test", FLEET_TAG[0]: FLEET_TAG[1]}
    figures = {name: r["figures"] for name, r in read_all(fleet.run_dir).items() if name.startswith("aggregator")}
    assert set().union(*(set(f["hosts"]) for f in figures.values())) <= set(HOSTS)


def test_a_fleet_p99_is_the_p99_over_every_hosts_values(tier: tuple[Pipeline, list[Pipeline]]) -> None:
    fleet, edges = tier
    per_host = {host: [float(h * 100 + i) for i in range(1, 41)] for h, host in enumerate(HOSTS)}
    edges[0].wait_interval_start()
    for pipeline, host in zip(edges, HOSTS, strict=True):
        pipeline.send("\n".join(f"fleet.latency:{v}|ms" for v in per_host[host]))
    timers = wait_for(lambda: fleet.series("fleet.latency"), 30, "the fleet timer")
    assert len(timers) == 1
    everything = [v for values in per_host.values() for v in values]
    assert timers[0]["stats"] == summary(everything, len(everything), [50.0, 90.0, 95.0, 99.0])


def test_a_fleet_process_killed_mid_interval_loses_nothing(tier: tuple[Pipeline, list[Pipeline]]) -> None:
    fleet, edges = tier

    def kill_one() -> None:
        _, pid = fleet.status()["aggregator:aggregator-0"]
        assert pid is not None
        fleet.wait_interval_start()
        os.kill(pid, signal.SIGKILL)

    before = fleet.status()["aggregator:aggregator-0"][1]
    sent = send_steadily(edges, 12, kill=kill_one)
    # The group notices within its session timeout (6 s), rebalances, and the partitions' next owner
    # re-reads what was not committed.
    wait_for(lambda: exact_total(fleet, "fleet.hits") == sent, 60,
             f"the fleet total to reach the {sent} increments sent", every=1.0)
    time.sleep(3)
    assert exact_total(fleet, "fleet.hits") == sent
    assert fleet.status()["aggregator:aggregator-0"][1] != before, "supervisord did not restart the killed process"
    assert fleet.log("aggregator-1").count("assigned (topic") >= 2, "the survivor took no partitions over"


def latest_totals(fleet: Pipeline, name: str) -> float:
    """The sum over intervals of each one's last value: a correction re-sends an interval whole."""
    last: dict[float, float] = {}
    for aggregate in fleet.series(name, **{FLEET_TAG[0]: FLEET_TAG[1]}):
        last[aggregate["timestamp"]] = aggregate["value"]
    return sum(last.values())


def test_a_host_that_stalls_past_the_lateness_window_is_merged_as_a_correction_and_counted(
        tier: tuple[Pipeline, list[Pipeline]]) -> None:
    fleet, edges = tier
    forwarder_pid = edges[2].status()["forwarder"][1]
    assert forwarder_pid is not None

    def stall_edge_c() -> None:
        # Its flushes wait (in ZeroMQ) while its forwarder is stopped: they reach Kafka 6 s late.
        os.kill(forwarder_pid, signal.SIGSTOP)
        time.sleep(6)
        os.kill(forwarder_pid, signal.SIGCONT)

    sent = send_steadily(edges, 12, kill=stall_edge_c)
    wait_for(lambda: latest_totals(fleet, "fleet.hits") == sent, 60,
             f"the corrected fleet total to reach the {sent} increments sent", every=1.0)
    figures = [r["figures"] for name, r in read_all(fleet.run_dir).items() if name.startswith("aggregator")]
    late = sum(f["late_partials"].get("edge-c", 0) for f in figures)
    assert late > 0
    assert not any(f["late_partials"].get(host) for f in figures for host in ("edge-a", "edge-b"))
    # The first flush of a stalled interval lacked edge-c's share: a correction came after it.
    per_interval = fleet_totals(fleet, "fleet.hits")
    assert any(len(values) > 1 for values in per_interval.values())
