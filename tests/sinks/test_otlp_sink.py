"""The otlp sink against a real OpenTelemetry Collector (its OTLP receiver, its file exporter read back):
every data point held to the file sink's record of the same flushes, in delta and cumulative
temporality; a Collector restart under traffic; a reload that moves the endpoint to another Collector."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from tests.sinks.servers import (
    OtelCollector,
    around_the_outage,
    settled,
    sink_pipeline,
    through_an_outage,
)

pytestmark = pytest.mark.servers

SINK = "otlp"
DELTA, CUMULATIVE = 1, 2


def next_interval(interval: float) -> None:
    """Sleep until just after the next interval edge: what is sent next lands in an interval of its own."""
    time.sleep(interval - time.time() % interval + 0.05 * interval)


def delta_point(aggregate: dict[str, Any], resource_tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the Collector should hold for one aggregate sent with delta temporality (OtelCollector.points)."""
    tags = aggregate["tags"]
    point: dict[str, Any] = {
        "name": aggregate["name"], "resource": {k: v for k, v in tags.items() if k in resource_tags},
        "attributes": {k: v for k, v in tags.items() if k not in resource_tags},
        "time": float(aggregate["timestamp"])}
    kind = aggregate["type"]
    if kind in ("counter", "trace"):
        point.update(kind="sum", temporality=DELTA, monotonic=aggregate["value"] >= 0, value=aggregate["value"],
                     start=float(aggregate["timestamp"] - aggregate["interval"]))
    elif kind in ("gauge", "set"):
        point.update(kind="gauge", temporality=None, monotonic=False, value=aggregate["value"], start=0.0)
    else:
        stats = aggregate["stats"]
        # The file sink shows the buckets cumulative: the Collector holds each bucket's own count.
        cumulative = [round(c) for c in aggregate["buckets"]["counts"]] if "buckets" in aggregate else None
        point.update(kind="histogram", temporality=DELTA, monotonic=False, count=round(stats["count"]),
                     sum=stats["sum"], min=stats["min"], max=stats["max"],
                     buckets=[round(stats["count"])] if cumulative is None else
                     [high - low for low, high in zip([0, *cumulative], cumulative, strict=False)],
                     bounds=aggregate["buckets"]["le"] if cumulative is not None else [],
                     start=float(aggregate["timestamp"] - aggregate["interval"]))
    return point


def ordered(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(points, key=lambda p: (p["name"], sorted(p["attributes"].items()), p["time"]))


def test_counters_gauges_histograms_and_sets_with_attributes_and_resource_read_back(otelcol: OtelCollector) -> None:
    pipeline = sink_pipeline(SINK, {"endpoint": otelcol.endpoint, "resource_tags": ["host"]})
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send("od.req:3|c|#route:/login,host:web1\nod.req:3|c|#route:/login,host:web1\nod.down:-2|c\n"
                      "od.lat:10|ms|#host:web1\nod.lat:30|ms|#host:web1\nod.lat:20|ms|#host:web1\n"
                      "od.users:alice|s\nod.users:bob|s\nod.users:alice|s\nod.temp:21.5|g|#room:a",
                      pipeline.statsd_port)
        next_interval(pipeline.flush_interval)
        pipeline.send("od.req:4|c|#route:/login,host:web1\nod.lat:5|ms|#host:web1", pipeline.statsd_port)
        wait_for(lambda: len(pipeline.series("od.req")) == 2 and len(otelcol.points("od.")) == len(
                 [a for a in pipeline.aggregates() if a["name"].startswith("od.")]), 20,
                 "every od. aggregate in the Collector", every=0.5)
        row = pipeline.sink_figures()[SINK]
    finally:
        pipeline.stop()
    flushed = [a for a in pipeline.aggregates() if a["name"].startswith("od.")]
    expected = ordered([delta_point(a, ("host",)) for a in flushed])
    # The Collector's file exporter writes what it took within 100 ms: the stop's final flush may be later.
    stored = settled(lambda: ordered(otelcol.points("od.")), expected)
    pipeline.cleanup()

    assert stored == expected
    # The numbers themselves: exact totals per interval, the timer's histogram, the set's size.
    by_name = {name: [p for p in ordered(stored) if p["name"] == name] for name in {p["name"] for p in stored}}
    assert [p["value"] for p in by_name["od.req"]] == [6, 4]
    assert all(p["resource"] == {"host": "web1"} and p["attributes"] == {"route": "/login"} and p["monotonic"]
               for p in by_name["od.req"])
    (down,) = by_name["od.down"]
    assert (down["value"], down["monotonic"]) == (-2, False)
    first_lat = by_name["od.lat"][0]
    assert (first_lat["count"], first_lat["sum"], first_lat["min"], first_lat["max"]) == (3, 60, 10, 30)
    assert first_lat["buckets"] == [3] and first_lat["bounds"] == []
    assert [p["value"] for p in by_name["od.users"]] == [2]
    assert {p["value"] for p in by_name["od.temp"]} == {21.5}
    assert all(p["attributes"] == {"room": "a"} and p["resource"] == {} for p in by_name["od.temp"])
    assert (row["dropped"], row["waiting"]) == ({}, 0), row


def test_timers_matching_histogram_buckets_land_with_their_exact_bucket_counts(otelcol: OtelCollector) -> None:
    pipeline = sink_pipeline(SINK, {"endpoint": otelcol.endpoint},
                             histogram_buckets=[{"match": "ob.*", "buckets": [1, 5, 10]}])
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        # Sampled at 0.5: each value stands for 2. 1 is on a bound (le: in it); 20 is past the last.
        pipeline.send("ob.lat:0.5|ms|@0.5\nob.lat:1|ms|@0.5\nob.lat:3|ms|@0.5\nob.lat:7|ms|@0.5\nob.lat:20|ms|@0.5\n"
                      "ob.size:10|h\nob.size:10.5|h\nplain.lat:4|ms", pipeline.statsd_port)
        wait_for(lambda: len(otelcol.points("ob.")) == 2 and len(otelcol.points("plain.")) == 1, 20,
                 "the bucketed and the plain timers in the Collector", every=0.5)
    finally:
        pipeline.stop()
    flushed = [a for a in pipeline.aggregates() if a["name"].startswith(("ob.", "plain."))]
    stored = otelcol.points("ob.") + otelcol.points("plain.")
    pipeline.cleanup()

    assert ordered(stored) == ordered([delta_point(a) for a in flushed])
    by_name = {p["name"]: p for p in stored}
    assert (by_name["ob.lat"]["bounds"], by_name["ob.lat"]["buckets"], by_name["ob.lat"]["count"]) == (
        [1, 5, 10], [4, 2, 2, 2], 10)
    assert (by_name["ob.size"]["bounds"], by_name["ob.size"]["buckets"]) == ([1, 5, 10], [0, 0, 1, 1])
    # A name no pattern matches: no bounds, one bucket holding the count, as before.
    assert (by_name["plain.lat"]["bounds"], by_name["plain.lat"]["buckets"]) == ([], [1])


def test_cumulative_temporality_sends_running_totals_from_the_series_first_interval(otelcol: OtelCollector) -> None:
    pipeline = sink_pipeline(SINK, {"endpoint": otelcol.endpoint, "temporality": "cumulative"})
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        for amount in (6, 4, 5):
            pipeline.send(f"oc.req:{amount}|c|#route:/a\noc.lat:{amount}|ms\noc.lat:{10 * amount}|ms",
                          pipeline.statsd_port)
            next_interval(pipeline.flush_interval)
        wait_for(lambda: len(otelcol.points("oc.req")) == 3, 20, "the 3 intervals of oc.req",
                 every=0.5)
        wait_for(lambda: len(otelcol.points("oc.lat")) == 3, 20, "the 3 intervals of oc.lat", every=0.5)
    finally:
        pipeline.stop()
    counters, timers = pipeline.series("oc.req"), pipeline.series("oc.lat")
    pipeline.cleanup()
    stored_counters = sorted(otelcol.points("oc.req"), key=lambda p: p["time"])
    stored_timers = sorted(otelcol.points("oc.lat"), key=lambda p: p["time"])

    assert [a["value"] for a in counters] == [6, 4, 5]
    first_start = float(counters[0]["timestamp"] - counters[0]["interval"])
    assert [(p["value"], p["time"], p["start"], p["temporality"], p["monotonic"]) for p in stored_counters] == [
        (total, float(a["timestamp"]), first_start, CUMULATIVE, True) for total, a in zip((6, 10, 15), counters,
                                                                                           strict=True)]
    assert [(p["count"], p["sum"], p["min"], p["max"], p["start"]) for p in stored_timers] == [
        (2, 66, 6, 60, first_start), (4, 110, 4, 60, first_start), (6, 165, 4, 60, first_start)]
    assert [a["stats"]["count"] for a in timers] == [2, 2, 2]


def test_a_restarted_collector_gets_every_interval_once(otelcol: OtelCollector) -> None:
    pipeline = sink_pipeline(SINK, {"endpoint": otelcol.endpoint})
    try:
        pipeline.start()
        during = through_an_outage(pipeline, otelcol, lambda: len(otelcol.points("o.c")))
    finally:
        pipeline.stop()
    counters, gauges = pipeline.series("o.c"), pipeline.series("o.g")
    log = pipeline.log("forwarder")
    row_dropped = [a for a in pipeline.series("pystatsd.forwarder.dropped") if a["tags"].get("sink") == SINK]
    pipeline.cleanup()

    assert len(during) >= 3, "the file sink kept writing while the Collector was away"
    assert f"Sink {SINK} cannot deliver" in log, log
    # Lists: a point the Collector took twice fails; one missing fails.
    for stored_name, flushed in (("o.c", counters), ("o.g", gauges)):
        expected = ordered([delta_point(a) for a in flushed])
        assert settled(lambda name=stored_name: ordered(otelcol.points(name)), expected) == expected
    assert len(counters) >= around_the_outage(during)
    assert not row_dropped


def test_a_reload_that_moves_the_endpoint_loses_and_repeats_nothing(otelcol: OtelCollector, tmp_path: Path) -> None:
    other = OtelCollector(tmp_path / "other")
    other.start()
    pipeline = sink_pipeline(SINK, {"endpoint": otelcol.endpoint}, self_metrics_prefix="")
    load = {key: f"or.c:1|c|#key:{key}\nor.t:{i}|ms|#key:{key}" for i, key in enumerate("abcd")}
    try:
        with pipeline:
            with SteadyTraffic(pipeline.statsd_port, load, every_secs=0.005, max_secs=60) as traffic:
                wait_for(lambda: otelcol.points("or.c"), 15, "the first points", every=0.5)
                time.sleep(1.0)
                pipeline.config["forwarders"][SINK]["endpoint"] = other.endpoint
                pipeline.save_config()
                reloaded = pipeline.pystatsd("reload")
                assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
                assert f"forwarders.{SINK}.endpoint:" in reloaded.stdout, reloaded.stdout
                time.sleep(2.5)
            sent = dict(traffic.sent)
            time.sleep(pipeline.flush_interval + 1.0)
            flushed = [a for a in pipeline.aggregates() if a["name"] in ("or.c", "or.t")]

            def stored() -> list[dict[str, Any]]:
                return otelcol.points("or.") + other.points("or.")

            wait_for(lambda: len(stored()) >= len(flushed), 20, "every interval in the two Collectors", every=0.5)
            row = pipeline.sink_figures()[SINK]
        before, after = otelcol.points("or."), other.points("or.")
    finally:
        other.stop()
    # Every interval of every series once, in one Collector or the other, and together all that was sent.
    assert ordered(before + after) == ordered([delta_point(a) for a in flushed])
    assert before and after
    for name, field in (("or.c", "value"), ("or.t", "count")):
        assert {key: sum(p[field] for p in before + after if p["name"] == name and p["attributes"]["key"] == key)
                for key in sent} == sent
    assert row["dropped"] == {}, row
