"""The fleet tier against the real broker: three hosts, each a network namespace running its own
edge (format: partials) into a topic of four partitions, two fleet processes in one consumer group;
exact fleet totals and percentiles, one host's link cut for 30 s, a planned restart of a fleet
process followed by its forwarder's kill -9, a fleet process killed with SIGKILL mid-interval.

One tier serves the module (starting four pipelines per test would cost a minute): each test has
series of its own, and the test that kills a process runs last.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from harness.netns import HostNetwork
from harness.pipeline import Pipeline
from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from stages.aggregator.fleet.bucket import FLEET_TAG
from stages.aggregator.stats import summary
from stages.rundir.figures import read_all
from tests.kafka.conftest import FLEET_HOSTS, SASL_USERS

pytestmark = pytest.mark.kafka

PARTITIONS = 4
TOPIC = "partials-fleet"


def fleet_tier(broker: Any, group: str, shards: int = 2, **options: Any) -> Pipeline:
    """Fleet processes (shards) in one group; its file sink holds the fleet aggregates."""
    return Pipeline({"input": {"kafka": {"kafka_broker": broker.bootstrap, "kafka_topic": TOPIC, "group": group,
                                         "lateness_seconds": 2.0, **options}},
                     "self_metrics_prefix": ""}, shards=shards)


def edge(broker: Any, network: HostNetwork, host: str) -> Pipeline:
    """An edge run in ``host``'s namespace, sending to the broker over the host's link."""
    pipeline = Pipeline({"agent": {"host": host, "tags": {"env": "test"}}, "self_metrics_prefix": ""}, shards=2,
                        exec_prefix=network.exec_prefix(host))
    pipeline.config["forwarders"]["kafka"] = {"kafka_broker": broker.hosts_bootstrap, "kafka_topic": TOPIC,
                                              "format": "partials", "linger_ms": 5}
    pipeline.save_config()
    return pipeline


def figures(fleet: Pipeline) -> list[dict[str, Any]]:
    return [r["figures"] for name, r in read_all(fleet.run_dir).items() if name.startswith("aggregator")]


def assigned(fleet: Pipeline) -> list[int]:
    return sorted(p for f in figures(fleet) for p in f.get("partitions", []))


def wait_assigned(fleet: Pipeline) -> None:
    try:
        wait_for(lambda: assigned(fleet) == list(range(PARTITIONS)), 60,
                 f"the fleet's {fleet.shards} processes to own the four partitions", every=0.5)
    except AssertionError:
        raise AssertionError("\n".join(fleet.log(f"aggregator-{k}")[-3000:] for k in range(fleet.shards))) from None


@pytest.fixture(scope="module")
def tier(kafka_broker: Any, host_network: HostNetwork) -> Iterator[tuple[Pipeline, list[Pipeline]]]:
    kafka_broker.create_topic(TOPIC, partitions=PARTITIONS)
    fleet = fleet_tier(kafka_broker, "group-fleet")
    edges = [edge(kafka_broker, host_network, host) for host in FLEET_HOSTS]
    started: list[Pipeline] = []
    try:
        fleet.start()
        started.append(fleet)
        wait_assigned(fleet)
        for pipeline in edges:
            pipeline.start()
            started.append(pipeline)
        warm_up(fleet, edges, host_network)
        yield fleet, edges
    finally:
        for pipeline in started:
            pipeline.stop()
        for pipeline in [fleet, *edges]:
            pipeline.cleanup()


def fleet_totals(fleet: Pipeline, name: str) -> dict[float, list[float]]:
    """Interval → the values flushed for it, in order (a re-sent flush repeats its value, a
    correction comes after the first)."""
    values: dict[float, list[float]] = defaultdict(list)
    for aggregate in fleet.series(name, **{FLEET_TAG[0]: FLEET_TAG[1]}):
        values[aggregate["timestamp"]].append(aggregate["value"])
    return values


def exact_total(fleet: Pipeline, name: str) -> float:
    totals = fleet_totals(fleet, name)
    assert all(len(set(v)) == 1 for v in totals.values()), f"an interval flushed twice with other values: {totals}"
    return sum(v[0] for v in totals.values())


def latest_total(fleet: Pipeline, name: str) -> float:
    """The sum over intervals of each one's last value: a correction re-sends an interval whole."""
    return sum(v[-1] for v in fleet_totals(fleet, name).values())


def wait_exact(fleet: Pipeline, name: str, sent: int) -> None:
    """Until the fleet total of ``name`` is ``sent`` and stays so; else what each interval got, and the
    fleet's logs."""
    try:
        wait_for(lambda: exact_total(fleet, name) == sent, 60, f"the fleet total to reach the {sent} increments sent",
                 every=1.0)
        time.sleep(3)
        assert exact_total(fleet, name) == sent
    except AssertionError as exc:
        logs = "\n".join(fleet.log(program)[-4000:] for program in
                         [*(f"aggregator-{k}" for k in range(fleet.shards)), "forwarder"])
        per_interval = dict(sorted(fleet_totals(fleet, name).items()))
        raise AssertionError(f"{exc}\nper interval: {per_interval}\n{logs}") from None


def warm_up(fleet: Pipeline, edges: list[Pipeline], network: HostNetwork) -> None:
    """A second of traffic through every edge, until the fleet has all of it. An edge's first send pays
    one-time costs (its producer's first metadata fetch among them); on a busy machine its first partial
    came past the fleet's 2 s lateness once, and the tests took the correction that follows for an
    interval counted twice."""
    with HostTraffic(network, edges, "fleet.warmup") as traffic:
        time.sleep(1.0)
    wait_for(lambda: latest_total(fleet, "fleet.warmup") == traffic.total, 60,
             f"the fleet total of the warm-up to reach its {traffic.total} increments", every=0.5)


class HostTraffic:
    """One steady counter into every edge, sent from inside its host to its loopback."""

    def __init__(self, network: HostNetwork, edges: list[Pipeline], name: str) -> None:
        self.by_host = {host: SteadyTraffic(p.statsd_port, {"c": f"{name}:1|c|#route:home"}, every_secs=0.005,
                                            max_secs=90, enter=lambda host=host: network.enter(host))
                        for host, p in zip(FLEET_HOSTS, edges, strict=True)}

    def __enter__(self) -> HostTraffic:
        for t in self.by_host.values():
            t.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.by_host.values():
            t.__exit__()

    @property
    def total(self) -> int:
        return sum(t.total for t in self.by_host.values())


def test_fleet_counter_totals_are_exact_and_one_series_over_every_host(
        tier: tuple[Pipeline, list[Pipeline]], host_network: HostNetwork) -> None:
    fleet, edges = tier
    with HostTraffic(host_network, edges, "fleet.hits") as traffic:
        time.sleep(6)
    sent = traffic.total
    wait_for(lambda: exact_total(fleet, "fleet.hits") == sent, 30,
             f"the fleet total to reach the {sent} increments sent", every=0.5)
    time.sleep(3)  # nothing more comes: no interval is counted twice
    assert exact_total(fleet, "fleet.hits") == sent
    tags = fleet.series("fleet.hits")[0]["tags"]
    # The edges' agent.tags are the series' own; the host is not among them.
    assert tags == {"route": "home", "env": "test", FLEET_TAG[0]: FLEET_TAG[1]}
    assert set().union(*(set(f["hosts"]) for f in figures(fleet))) <= set(FLEET_HOSTS)


def test_a_fleet_p99_is_the_p99_over_every_hosts_values(tier: tuple[Pipeline, list[Pipeline]],
                                                         host_network: HostNetwork) -> None:
    fleet, edges = tier
    per_host = {host: [float(h * 100 + i) for i in range(1, 41)] for h, host in enumerate(FLEET_HOSTS)}
    edges[0].wait_interval_start()
    for pipeline, host in zip(edges, FLEET_HOSTS, strict=True):
        once = SteadyTraffic(pipeline.statsd_port, {"t": "\n".join(f"fleet.latency:{v}|ms" for v in per_host[host])},
                             count=1, enter=lambda host=host: host_network.enter(host))
        sender = threading.Thread(target=once.run)  # a thread of its own enters the host, never this one
        sender.start()
        sender.join()
        assert once.total == 1
    timers = wait_for(lambda: fleet.series("fleet.latency"), 30, "the fleet timer")
    assert len(timers) == 1
    everything = [v for values in per_host.values() for v in values]
    assert timers[0]["stats"] == summary(everything, len(everything), [50.0, 90.0, 95.0, 99.0])


def test_a_host_cut_off_for_30s_is_merged_late_or_dropped_as_configured_and_counted(
        kafka_broker: Any, tier: tuple[Pipeline, list[Pipeline]], host_network: HostNetwork) -> None:
    fleet, edges = tier
    # A second fleet tier on the same partials, in a group of its own, that drops late partials; it
    # reads over the broker's SASL listener.
    dropping = fleet_tier(kafka_broker, "group-fleet-drop", shards=1, late="drop",
                          kafka_broker=kafka_broker.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                          sasl_password=SASL_USERS["token"])
    late_before = {k: dict(f["late_partials"]) for k, f in enumerate(figures(fleet))}
    try:
        dropping.start()
        wait_assigned(dropping)
        assert "SASL_PLAINTEXT sends the password unencrypted" in dropping.log("aggregator-0")
        with HostTraffic(host_network, edges, "fleet.cut") as traffic:
            time.sleep(3)
            host_network.link("edge-c", up=False)
            try:
                time.sleep(30)
            finally:
                host_network.link("edge-c", up=True)
            time.sleep(3)
        sent = traffic.total
        sent_elsewhere = sent - traffic.by_host["edge-c"].total
        # edge-c's producer re-sends what it holds once its link is back; merged, it corrects the
        # intervals it missed.
        wait_for(lambda: latest_total(fleet, "fleet.cut") == sent, 90,
                 f"the corrected fleet total to reach the {sent} increments sent", every=1.0)
        late_now = {k: f["late_partials"] for k, f in enumerate(figures(fleet))}
        new_late = {host: sum(late_now[k].get(host, 0) - late_before.get(k, {}).get(host, 0) for k in late_now)
                    for host in FLEET_HOSTS}
        assert new_late["edge-c"] > 0 and new_late["edge-a"] == new_late["edge-b"] == 0, new_late
        # The first flush of an interval edge-c missed lacked its share: a correction came after it.
        assert any(len(set(values)) > 1 for values in fleet_totals(fleet, "fleet.cut").values())

        # The dropping tier counted what it dropped, by host, and corrected nothing.
        wait_for(lambda: figures(dropping)[0]["late_dropped"] > 0, 30, "the dropping tier to count late partials")
        dropped = figures(dropping)[0]
        assert set(dropped["late_partials"]) == {"edge-c"}, dropped["late_partials"]
        assert sent_elsewhere <= exact_total(dropping, "fleet.cut") < sent
    finally:
        dropping.stop()
        dropping.cleanup()


def test_a_planned_restart_and_the_fleet_forwarder_killed_lose_nothing(tier: tuple[Pipeline, list[Pipeline]],
                                                                       host_network: HostNetwork) -> None:
    fleet, edges = tier
    wait_assigned(fleet)
    before = fleet.status()
    with HostTraffic(host_network, edges, "fleet.ops") as traffic:
        time.sleep(4)
        # A redeploy: the process leaves the group; its open intervals are re-read by the next owner.
        fleet.wait_interval_start()
        fleet.ctl("restart", "aggregator:aggregator-1", check=True)
        time.sleep(4)
        # The forwarder dies with flushes its sinks had not finished: they are sent again to the next one.
        os.kill(before["forwarder"][1], signal.SIGKILL)
        time.sleep(4)
    wait_exact(fleet, "fleet.ops", traffic.total)
    after = fleet.status()
    assert after["forwarder"][1] != before["forwarder"][1], "supervisord did not restart the killed forwarder"
    assert after["aggregator:aggregator-1"][1] != before["aggregator:aggregator-1"][1]


def test_a_fleet_process_killed_mid_interval_loses_nothing(tier: tuple[Pipeline, list[Pipeline]],
                                                            host_network: HostNetwork) -> None:
    fleet, edges = tier
    wait_assigned(fleet)
    before = fleet.status()["aggregator:aggregator-0"][1]
    assert before is not None
    with HostTraffic(host_network, edges, "fleet.kill") as traffic:
        time.sleep(6)
        fleet.wait_interval_start()
        os.kill(before, signal.SIGKILL)
        time.sleep(6)
    # The group notices within its session timeout (6 s), rebalances, and the partitions' next owner
    # re-reads what was not committed.
    wait_exact(fleet, "fleet.kill", traffic.total)
    assert fleet.status()["aggregator:aggregator-0"][1] != before, "supervisord did not restart the killed process"
    assert fleet.log("aggregator-1").count("assigned (topic") >= 2, "the survivor took no partitions over"
