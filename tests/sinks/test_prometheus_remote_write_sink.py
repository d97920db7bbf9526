"""The prometheus_remote_write sink against a real Prometheus (2.42, its remote write receiver) and a real
VictoriaMetrics: every sample read back and held to the file sink's record of the same flushes; a
destination restart under traffic, a refused password, a reload that changes the URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from tests.sinks.servers import PrometheusServer, VictoriaMetricsServer, own, settled, sink_pipeline

pytestmark = pytest.mark.servers

SINK = "prometheus_remote_write"
RemoteServer = PrometheusServer | VictoriaMetricsServer
#: Each test names its metrics with its own prefix: the servers are shared by the session.
SERVERS = ["prometheus", "victoria_metrics"]


def ms(aggregate: dict[str, Any]) -> int:
    """An aggregate's timestamp (the end of its interval) as remote write stamps it: milliseconds."""
    return round(aggregate["timestamp"] * 1000)


def receiving(pipeline: Pipeline) -> None:
    """Wait until the pipeline's receiver takes metrics (a stage RUNNING may not listen yet on a busy machine)."""
    wait_for(lambda: pipeline.send("rw.warm_up:1|c", pipeline.statsd_port) or pipeline.series("rw.warm_up"), 20,
             "the receiver to take a first metric", every=0.5)


def next_interval(interval: float) -> None:
    """Sleep until just after the next interval edge: what is sent next lands in an interval of its own."""
    time.sleep(interval - time.time() % interval + 0.05 * interval)


def running_totals(aggregates: list[dict[str, Any]], amount: Callable[[dict[str, Any]], float]) -> dict[int, float]:
    """What a series of per-interval amounts becomes as a Prometheus counter: timestamp → total so far."""
    total, totals = 0.0, {}
    for aggregate in sorted(aggregates, key=lambda a: a["timestamp"]):
        total += amount(aggregate)
        totals[ms(aggregate)] = total
    return totals


@pytest.mark.parametrize("server_name", SERVERS)
def test_counters_gauges_summaries_and_sets_read_back_with_sanitised_names(server_name: str,
                                                                           request: pytest.FixtureRequest) -> None:
    server: RemoteServer = request.getfixturevalue(server_name)
    p = f"rw{server_name[0]}v"  # rwpv, rwvv: this test's names in this server
    pipeline = sink_pipeline(SINK, {"url": server.write_url})
    tags = "#route:/login,my-key:v1,__meta:x"
    try:
        pipeline.start()
        receiving(pipeline)
        pipeline.wait_interval_start()
        pipeline.send(f"{p}.req:3|c|{tags}\n{p}.req:3|c|{tags}\n9{p}.x:1|c\n{p}.lat:10|ms\n{p}.lat:30|ms\n"
                      f"{p}.users:alice|s\n{p}.users:bob|s\n{p}.users:alice|s\n{p}.temp:21.5|g", pipeline.statsd_port)
        next_interval(pipeline.flush_interval)
        pipeline.send(f"{p}.req:4|c|{tags}\n{p}.lat:20|ms", pipeline.statsd_port)
        next_interval(pipeline.flush_interval)
        pipeline.send(f"{p}.req:5|c|{tags}", pipeline.statsd_port)
        counter = f'{p}_req_total{{_meta="x",my_key="v1",route="/login"}}'
        wait_for(lambda: len(server.samples(f"{p}_req_total").get(counter, {})) == 3, 20,
                 f"the 3 intervals of {counter} in {server_name}", every=0.5)
        row = pipeline.sink_figures()[SINK]
    finally:
        pipeline.stop()
    flushed = own(pipeline.aggregates())

    def of(name: str) -> list[dict[str, Any]]:
        return [a for a in flushed if a["name"] == name]

    lat = of(f"{p}.lat")
    expected = {
        counter: running_totals(of(f"{p}.req"), lambda a: a["value"]),
        # A leading digit gets a "_" before it; dots become "_".
        f"_9{p}_x_total{{}}": running_totals(of(f"9{p}.x"), lambda a: a["value"]),
        f"{p}_lat_count{{}}": running_totals(lat, lambda a: a["stats"]["count"]),
        f"{p}_lat_sum{{}}": running_totals(lat, lambda a: a["stats"]["sum"]),
        **{f'{p}_lat{{quantile="{q}"}}': {ms(a): a["stats"][stat] for a in lat}
           for q, stat in (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))},
        f"{p}_users{{}}": {ms(a): a["value"] for a in of(f"{p}.users")},
        f"{p}_temp{{}}": {ms(a): a["value"] for a in of(f"{p}.temp")},
    }
    pipeline.cleanup()
    assert settled(lambda: server.samples(f'{{__name__=~"{p}_.+|_9{p}_.+"}}'), expected) == expected
    # The numbers themselves: counters and a summary's count and sum add up across intervals.
    assert list(expected[counter].values()) == [6, 10, 15]
    assert list(expected[f"{p}_lat_count{{}}"].values()) == [2, 3]
    assert list(expected[f"{p}_lat_sum{{}}"].values()) == [40, 60]
    assert list(expected[f'{p}_lat{{quantile="0.5"}}'].values()) == [10, 20]
    assert list(expected[f"{p}_users{{}}"].values()) == [2]
    assert set(expected[f"{p}_temp{{}}"].values()) == {21.5}
    assert (row["dropped"], row["waiting"]) == ({}, 0), row


@pytest.mark.parametrize("server_name", SERVERS)
def test_timers_as_histogram_land_as_cumulative_le_buckets_with_exact_counts(server_name: str,
                                                                            request: pytest.FixtureRequest) -> None:
    server: RemoteServer = request.getfixturevalue(server_name)
    p = f"rw{server_name[0]}h"
    pipeline = sink_pipeline(SINK, {"url": server.write_url, "timers_as": "histogram"},
                             histogram_buckets=[{"match": f"{p}.*", "buckets": [1, 5, 10]}])
    try:
        pipeline.start()
        receiving(pipeline)
        pipeline.wait_interval_start()
        # At 0.5 each value stands for 2; 1 is on a bound (le: in it), 20 past the last (+Inf alone).
        pipeline.send(f"{p}.lat:0.5|ms|@0.5\n{p}.lat:1|ms|@0.5\n{p}.lat:3|ms|@0.5\n{p}.lat:20|ms|@0.5\n"
                      f"{p}x.lat:3|ms", pipeline.statsd_port)
        next_interval(pipeline.flush_interval)
        pipeline.send(f"{p}.lat:7|ms\n{p}.lat:10|ms\n{p}.lat:0|ms", pipeline.statsd_port)
        wait_for(lambda: len(server.samples(f"{p}_lat_count").get(f"{p}_lat_count{{}}", {})) == 2, 20,
                 f"the 2 intervals of {p}_lat in {server_name}", every=0.5)
    finally:
        pipeline.stop()
    lat = [a for a in own(pipeline.aggregates()) if a["name"] == f"{p}.lat"]
    pipeline.cleanup()

    expected = {f'{p}_lat_bucket{{le="{le}"}}': running_totals(lat, lambda a, i=i: a["buckets"]["counts"][i])
                for i, le in enumerate(("1.0", "5.0", "10.0", "+Inf"))}
    expected[f"{p}_lat_sum{{}}"] = running_totals(lat, lambda a: a["stats"]["sum"])
    expected[f"{p}_lat_count{{}}"] = running_totals(lat, lambda a: a["stats"]["count"])
    assert settled(lambda: server.samples(f'{{__name__=~"{p}_lat_.+"}}'), expected) == expected
    # The numbers themselves: cumulative in le, and added up across the two intervals.
    assert [list(expected[f'{p}_lat_bucket{{le="{le}"}}'].values()) for le in ("1.0", "5.0", "10.0", "+Inf")] == [
        [4, 5], [6, 7], [6, 9], [8, 11]]
    # A timer no pattern matches stays a summary.
    assert f'{p}x_lat{{quantile="0.5"}}' in server.samples(f"{p}x_lat")


@pytest.mark.parametrize("server_name", SERVERS)
def test_a_restarted_destination_gets_every_interval_once(server_name: str, request: pytest.FixtureRequest) -> None:
    server: RemoteServer = request.getfixturevalue(server_name)
    p = f"rw{server_name[0]}o"
    counter, gauge = f'{p}_c_total{{run="outage"}}', f"{p}_g{{}}"
    pipeline = sink_pipeline(SINK, {"url": server.write_url})
    try:
        pipeline.start()
        receiving(pipeline)
        with SteadyTraffic(pipeline.statsd_port, {"outage": f"{p}.c:1|c|#run:outage\n{p}.g:7|g"},
                           every_secs=0.05, max_secs=60) as traffic:
            wait_for(lambda: server.samples(f"{p}_c_total"), 15, "the first samples", every=0.5)
            time.sleep(1.5)
            server.stop()
            stopped = time.time()
            time.sleep(4)
            during = [a for a in pipeline.series(f"{p}.c") if a["timestamp"] > stopped]
            server.start()
            # Retries back off to 5 s; then the buffered intervals go, oldest first.
            wait_for(lambda: len(server.samples(f"{p}_c_total").get(counter, {}))
                     >= len(pipeline.series(f"{p}.c")) - 1, 20, "the buffered intervals to arrive", every=0.5)
        sent = traffic.sent["outage"]
        row = pipeline.sink_figures()[SINK]
    finally:
        pipeline.stop()
    counters, gauges = pipeline.series(f"{p}.c"), pipeline.series(f"{p}.g")
    log = pipeline.log("forwarder")
    pipeline.cleanup()

    assert len(during) >= 3, "the file sink kept writing while the destination was away"
    assert f"Sink {SINK} cannot deliver" in log, log
    # Each interval once (VictoriaMetrics' samples() fails on a timestamp stored twice), none missing,
    # each total what the intervals before it add up to: nothing lost, nothing twice.
    expected = {counter: running_totals(counters, lambda a: a["value"]), gauge: {ms(a): a["value"] for a in gauges}}
    stored = settled(lambda: server.samples(f'{{__name__=~"{p}_.+"}}'), expected)
    assert stored == expected
    assert max(stored[counter].values()) == sent
    # The traffic ran before, through and after the 4 s outage (how many intervals depends on the machine's pace).
    assert len(stored[counter]) >= 6
    assert row["dropped"] == {}, row


def test_basic_auth_a_refused_password_is_dropped_and_counted_and_a_reload_fixes_it(tmp_path: Path) -> None:
    user, password = "pystatsd", "rw-test-secret-77a0"
    # A server of its own: every endpoint of it asks for the credentials.
    server = VictoriaMetricsServer(tmp_path / "vm", basic_auth=(user, password))
    server.start()
    try:
        password_file = tmp_path / "rw-password"
        password_file.write_text("not-" + password + "\n")
        password_file.chmod(0o600)
        settings = {"url": server.write_url, "username": user, "password_file": str(password_file)}
        # No self-metrics: what the sink is handed is then exactly the user's aggregates.
        pipeline = sink_pipeline(SINK, settings, self_metrics_prefix="")
        with pipeline:
            receiving(pipeline)
            pipeline.wait_interval_start()
            pipeline.send("rwa.c:2|c", pipeline.statsd_port)
            # Every aggregate the file sink has (the warm-up's too) refused and counted, none delivered.
            row = wait_for(lambda: pipeline.series("rwa.c") and (row := pipeline.sink_figures().get(SINK, {}))
                           .get("dropped") == {"rejected": len(pipeline.aggregates())} and row, 20,
                           "every refused aggregate to be counted")
            assert (row["delivered"], row["waiting"]) == (0, 0), row
            # The reload reads the file again: the password it holds now is another config.
            password_file.write_text(password + "\n")
            reloaded = pipeline.pystatsd("reload")
            assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
            pipeline.wait_interval_start()
            pipeline.send("rwa.c:5|c", pipeline.statsd_port)
            wait_for(lambda: server.samples("rwa_c_total"), 20, "the counter in VictoriaMetrics", every=0.5)
            log = pipeline.log("forwarder")
            flushed = pipeline.series("rwa.c")
        assert "answered HTTP 401" in log and "check the credentials" in log, log
        assert password not in log
        # The refused 2 was dropped; the reload made a new sink, whose running total starts again: 5.
        assert [a["value"] for a in flushed] == [2, 5]
        assert server.samples("rwa_c_total") == {"rwa_c_total{}": {ms(flushed[1]): 5.0}}
    finally:
        server.stop()


def test_a_reload_that_fixes_the_url_delivers_what_the_wrong_one_held_exactly_once(
        prometheus: PrometheusServer) -> None:
    settings = {"url": f"http://127.0.0.1:{free_port()}/api/v1/write"}  # nothing listens there
    pipeline = sink_pipeline(SINK, settings, self_metrics_prefix="")
    with pipeline:
        receiving(pipeline)
        pipeline.wait_interval_start()
        pipeline.send("rwf.a:1|c\nrwf.b:2|c\nrwf.c:5|c", pipeline.statsd_port)
        wait_for(lambda: len(pipeline.series("rwf.c")) == 1
                 and pipeline.sink_figures().get(SINK, {}).get("waiting") == len(pipeline.aggregates()), 20,
                 "what the file sink has (the warm-up and rwf.a, b and c) waiting at the wrong URL")
        pipeline.config["forwarders"][SINK]["url"] = prometheus.write_url
        pipeline.save_config()
        reloaded = pipeline.pystatsd("reload")
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        pipeline.wait_interval_start()
        pipeline.send("rwf.a:7|c", pipeline.statsd_port)
        wait_for(lambda: len(prometheus.samples("rwf_a_total").get("rwf_a_total{}", {})) == 2, 20,
                 "what the wrong URL held, and what came after, in Prometheus", every=0.5)
        row = wait_for(lambda: (row := pipeline.sink_figures()[SINK])["delivered"] == len(pipeline.aggregates())
                       and row, 10, "the row to count every aggregate delivered")
        assert (row["waiting"], row["dropped"], row["failing"]) == (0, {}, None), row
        flushed = own(pipeline.aggregates())
    expected = {f"{name.replace('.', '_')}_total{{}}": running_totals([a for a in flushed if a["name"] == name],
                                                                      lambda a: a["value"])
                for name in ("rwf.a", "rwf.b", "rwf.c")}
    assert settled(lambda: prometheus.samples('{__name__=~"rwf_.+"}'), expected) == expected
    assert [list(expected[k].values()) for k in sorted(expected)] == [[1, 8], [2], [5]]
