"""The prometheus sink in the real pipeline: /metrics scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.ports import free_port
from harness.wait import wait_for
from tests.sinks.servers import sink_pipeline

pytestmark = pytest.mark.e2e


def scrape(port: int) -> dict[str, Any]:
    """Metric family name → family, from one scrape of /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape_when_served(port: int) -> dict[str, Any]:
    """A scrape, or {} while nothing serves yet (the sink opens with the first flush it is given)."""
    try:
        return scrape(port)
    except urllib.error.URLError:
        return {}


def samples(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_counters_add_up_gauges_and_summaries_with_sanitised_names() -> None:
    port = free_port()
    pipeline = sink_pipeline("prometheus", {"port": port})
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send("p.req:3|c|#route:/login,env:prod\np.lat:10|ms\np.lat:30|ms\np.users:alice|s\n"
                      "p.users:bob|s\n3rd-party.temp:21.5|g|#room.name:a,quantile:x", pipeline.statsd_port)
        wait_for(lambda: "p_lat" in scrape_when_served(port), 10, "the first interval at /metrics")
        pipeline.wait_interval_start()
        pipeline.send("p.req:4|c|#route:/login,env:prod\np.lat:20|ms\np.users:carol|s", pipeline.statsd_port)
        wait_for(lambda: samples(scrape(port)["p_lat"]).get(("p_lat_count", ())) == 3.0, 10,
                 "the second interval at /metrics")
        families = scrape(port)
    finally:
        pipeline.stop()
        pipeline.cleanup()

    req = families["p_req"]
    assert req.type == "counter"
    # statsd counters are per-interval: the Prometheus counter is their running total.
    assert samples(req) == {("p_req_total", (("env", "prod"), ("route", "/login"))): 7.0}
    lat = families["p_lat"]
    assert lat.type == "summary"
    # Quantiles are the latest interval's; _sum and _count add up, as a summary's must.
    assert samples(lat) == {("p_lat", (("quantile", q),)): 20.0 for q in ("0.5", "0.9", "0.95", "0.99")} | {
        ("p_lat_sum", ()): 60.0, ("p_lat_count", ()): 3.0}
    users = families["p_users"]
    assert (users.type, samples(users)) == ("gauge", {("p_users", ()): 1.0})
    temp = families["_3rd_party_temp"]
    assert temp.type == "gauge"
    assert samples(temp) == {("_3rd_party_temp", (("quantile", "x"), ("room_name", "a"))): 21.5}
    delivered = samples(families["pystatsd_forwarder_delivered"])
    assert delivered[("pystatsd_forwarder_delivered_total", (("sink", "prometheus"),))] > 0


def test_a_series_that_stops_arriving_disappears_after_its_expiry() -> None:
    port = free_port()
    pipeline = sink_pipeline("prometheus", {"port": port, "expire_after_secs": 2.5}, self_metrics_prefix="")
    try:
        pipeline.start()
        pipeline.send("e.once:1|c\ne.level:5|g", pipeline.statsd_port)
        wait_for(lambda: {"e_once", "e_level"} <= set(scrape_when_served(port)), 10, "both series at /metrics")
        seen = time.monotonic()
        # The gauge is sent again every interval (until the aggregator expires it); the counter is not.
        wait_for(lambda: "e_once" not in scrape(port), 10, "the counter to expire")
        gone_after = time.monotonic() - seen
        families = scrape(port)
    finally:
        pipeline.stop()
        pipeline.cleanup()
    assert 1.0 < gone_after < 6.0
    assert samples(families["e_level"]) == {("e_level", ()): 5.0}
