"""The otlp sink's encoding (delta and cumulative, every type, attributes and resources) and its answers to
each HTTP status and to a partial success, against a loopback stand-in (tests/unit/http_stand_in.py): what
the real Collector (tests/sinks/test_otlp_sink.py) cannot be made to do on demand."""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from stages.common.config import ConfigError, Secret, load_section
from stages.common.contract import FlushHeader
from stages.forwarder.fanout import SinkRunner
from stages.forwarder.sinks.base import Flush, SinkError
from stages.forwarder.sinks.otlp import OtlpConfig, OtlpEncoder, OtlpSink, bucket_counts, status_message
from tests.unit.http_stand_in import StandIn, serve

STAMP = 1795597610
NS = 1_000_000_000
DELTA, CUMULATIVE = "AGGREGATION_TEMPORALITY_DELTA", "AGGREGATION_TEMPORALITY_CUMULATIVE"


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    yield from serve("/otlp")


def config(endpoint: str = "http://127.0.0.1:4318", **keys: Any) -> OtlpConfig:
    return load_section(OtlpConfig, {"endpoint": endpoint, **keys}, "forwarders.otlp")


def agg(name: str, kind: str, value: float = 0.0, stamp: int = STAMP, **tags: str) -> dict[str, Any]:
    aggregate: dict[str, Any] = {"name": name, "type": kind, "tags": tags, "timestamp": stamp, "interval": 10}
    if kind in ("timer", "histogram", "distribution"):
        aggregate["stats"] = {"count": 3.0, "sum": 60.0, "min": 10.0, "max": 30.0, "mean": 20.0, "p99": 30.0}
    else:
        aggregate["value"] = value
    return aggregate


def flush(*aggregates: dict[str, Any]) -> Flush:
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=1, interval_start=STAMP - 10.0, interval=10.0,
                         n=len(aggregates))
    return Flush(header, list(aggregates), 0)


def decoded(requests: Iterable[ExportMetricsServiceRequest]) -> list[dict[str, Any]]:
    return [MessageToDict(request) for request in requests]


def points(request: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(resource as text, metric name) → the metric, each data point's attributes made a dict."""
    found = {}
    for resource_metrics in request["resourceMetrics"]:
        resource = ",".join(f"{a['key']}={a['value']['stringValue']}"
                            for a in resource_metrics.get("resource", {}).get("attributes", []))
        for scope in resource_metrics["scopeMetrics"]:
            assert scope["scope"]["name"] == "pystatsd"
            for metric in scope["metrics"]:
                found[(resource, metric["name"])] = metric
    return found


def test_each_type_is_its_otlp_metric_with_its_tags_as_attributes_and_resource_tags_moved() -> None:
    encoder = OtlpEncoder(config(resource_tags=["host"]))
    (request,) = decoded(encoder.requests([
        agg("c", "counter", 5.0, host="a", route="/x"), agg("c", "counter", 2.0, host="b"),
        agg("neg", "counter", -3.0), agg("t", "trace", 4.0), agg("g", "gauge", 21.5, room="k"),
        agg("s", "set", 7.0), *(agg(f"h.{kind}", kind, host="a") for kind in ("timer", "histogram", "distribution")),
    ], 0.0))
    found = points(request)
    start, end = str((STAMP - 10) * NS), str(STAMP * NS)
    assert found[("host=a", "c")] == {"name": "c", "sum": {
        "dataPoints": [{"attributes": [{"key": "route", "value": {"stringValue": "/x"}}], "startTimeUnixNano": start,
                        "timeUnixNano": end, "asDouble": 5.0}],
        "aggregationTemporality": DELTA, "isMonotonic": True}}
    assert found[("host=b", "c")]["sum"]["dataPoints"][0]["asDouble"] == 2.0
    # A counter whose interval's sum is negative is not monotonic; a trace always is.
    assert "isMonotonic" not in found[("", "neg")]["sum"]
    assert found[("", "t")]["sum"]["isMonotonic"] is True
    assert found[("", "g")] == {"name": "g", "gauge": {"dataPoints": [
        {"attributes": [{"key": "room", "value": {"stringValue": "k"}}], "timeUnixNano": end, "asDouble": 21.5}]}}
    assert found[("", "s")]["gauge"]["dataPoints"][0]["asInt"] == "7"
    for kind in ("timer", "histogram", "distribution"):
        assert found[("host=a", f"h.{kind}")]["histogram"] == {"aggregationTemporality": DELTA, "dataPoints": [
            {"startTimeUnixNano": start, "timeUnixNano": end, "count": "3", "sum": 60.0, "min": 10.0, "max": 30.0,
             "bucketCounts": ["3"]}]}
    # One ResourceMetrics per resource.
    assert sorted(len(r["scopeMetrics"][0]["metrics"]) for r in request["resourceMetrics"]) == [1, 4, 4]


def test_cumulative_keeps_running_totals_from_the_first_interval_and_forgets_an_idle_series() -> None:
    encoder = OtlpEncoder(config(temporality="cumulative", expire_after_secs=30))
    sent: list[dict[str, Any]] = []
    for i, (amount, now) in enumerate(((6.0, 0.0), (-1.0, 10.0), (5.0, 20.0), (2.0, 100.0))):
        stamp = STAMP + 10 * i
        (request,) = decoded(encoder.requests([agg("c", "counter", amount, stamp), agg("t", "timer", stamp=stamp),
                                               agg("g", "gauge", amount, stamp)], now))
        sent.append(points(request))
    sums = [p[("", "c")]["sum"] for p in sent]
    assert [s["dataPoints"][0]["asDouble"] for s in sums] == [6.0, 5.0, 10.0, 2.0]
    assert {s["aggregationTemporality"] for s in sums} == {CUMULATIVE}
    # Not monotonic once an interval went down; after the 80 s idle (> 30), a new series.
    assert [s.get("isMonotonic", False) for s in sums] == [True, False, False, True]
    first, restarted = str((STAMP - 10) * NS), str((STAMP + 20) * NS)
    assert [s["dataPoints"][0]["startTimeUnixNano"] for s in sums] == [first, first, first, restarted]
    histograms = [p[("", "t")]["histogram"]["dataPoints"][0] for p in sent]
    assert [(h["count"], h["sum"], h["bucketCounts"]) for h in histograms] == [
        ("3", 60.0, ["3"]), ("6", 120.0, ["6"]), ("9", 180.0, ["9"]), ("3", 60.0, ["3"])]
    # A gauge is the same whatever the temporality.
    assert [p[("", "g")]["gauge"]["dataPoints"][0]["asDouble"] for p in sent] == [6.0, -1.0, 5.0, 2.0]


def bucketed(stamp: int = STAMP, le: list[float] | None = None) -> dict[str, Any]:
    """A timer whose shard counted it into buckets: 3 values, 0.5, 2.0 (on a bound) and 30."""
    return {**agg("t", "timer", stamp=stamp),
            "buckets": {"le": le or [1.0, 2.0, 10.0], "counts": [1.0, 2.0, 2.0, 3.0]}}


def test_buckets_become_explicit_bounds_and_non_cumulative_bucket_counts() -> None:
    (request,) = decoded(OtlpEncoder(config()).requests([bucketed(), agg("plain", "timer")], 0.0))
    point = points(request)[("", "t")]["histogram"]["dataPoints"][0]
    # len(bounds) + 1 counts, each its own bucket's: (-inf, 1], (1, 2], (2, 10], (10, +inf).
    assert (point["explicitBounds"], point["bucketCounts"], point["count"]) == (
        [1.0, 2.0, 10.0], ["1", "1", "0", "1"], "3")
    assert "explicitBounds" not in points(request)[("", "plain")]["histogram"]["dataPoints"][0]


def test_cumulative_adds_up_the_bucket_counts_and_starts_again_when_the_bounds_change() -> None:
    encoder = OtlpEncoder(config(temporality="cumulative"))
    sent = [points(decoded(encoder.requests([bucketed(STAMP + 10 * i, le)], 10.0 * i))[0])[("", "t")]
            for i, le in enumerate(([1.0, 2.0, 10.0], [1.0, 2.0, 10.0], [1.0, 5.0, 10.0]))]
    got = [(p["histogram"]["dataPoints"][0]["bucketCounts"], p["histogram"]["dataPoints"][0]["count"],
            p["histogram"]["dataPoints"][0]["startTimeUnixNano"]) for p in sent]
    first, reset = str((STAMP - 10) * NS), str((STAMP + 10) * NS)
    assert got == [(["1", "1", "0", "1"], "3", first), (["2", "2", "0", "2"], "6", first),
                   (["1", "1", "0", "1"], "3", reset)]


def test_weighted_bucket_counts_round_to_whole_counts_that_add_up_to_the_count() -> None:
    assert bucket_counts([0.4, 1.6, 1.6, 3.3]) == [0, 2, 0, 1]
    assert sum(bucket_counts([3.3333, 6.6667, 10.0])) == 10


def test_a_flush_goes_in_requests_of_at_most_points_per_request() -> None:
    encoder = OtlpEncoder(config(points_per_request=2))
    requests = list(encoder.requests([agg(f"c{i}", "counter", 1.0) for i in range(5)], 0.0))
    assert [sum(len(m.sum.data_points) for r in q.resource_metrics for s in r.scope_metrics for m in s.metrics)
            for q in requests] == [2, 2, 1]


def test_a_request_is_gzipped_protobuf_to_v1_metrics_with_the_headers_from_env_and_file(
        stand_in: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEST_OTLP_AUTH", "Bearer otlp-token-51c2")
    key_file = tmp_path / "key"
    key_file.write_text("key-from-file\n")
    key_file.chmod(0o600)
    sink = OtlpSink(config(stand_in.base_url + "/otlp/", headers={"X-Scope-OrgID": "team-a"},
                           headers_env={"Authorization": "TEST_OTLP_AUTH"}, headers_file={"api-key": str(key_file)}))
    try:
        assert sink.write(flush(agg("c", "counter", 1.0))) == 0
    finally:
        sink.close()
    ((path, headers, body),) = stand_in.requests
    assert path == "/otlp/v1/metrics"
    assert {k: headers[k] for k in ("Content-Type", "Content-Encoding", "X-Scope-OrgID", "Authorization",
                                    "api-key")} == {
        "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "X-Scope-OrgID": "team-a",
        "Authorization": "Bearer otlp-token-51c2", "api-key": "key-from-file"}
    request = ExportMetricsServiceRequest.FromString(gzip.decompress(body))
    assert request.resource_metrics[0].scope_metrics[0].metrics[0].name == "c"


def test_compression_none_sends_the_protobuf_as_it_is(stand_in: StandIn) -> None:
    sink = OtlpSink(config(stand_in.base_url, compression="none"))
    sink.write(flush(agg("c", "counter", 1.0)))
    sink.close()
    ((path, headers, body),) = stand_in.requests
    assert path == "/v1/metrics" and "Content-Encoding" not in headers
    assert ExportMetricsServiceRequest.FromString(body).resource_metrics[0].scope_metrics[0].metrics[0].name == "c"


def partial(rejected: int) -> bytes:
    response = ExportMetricsServiceResponse()
    response.partial_success.rejected_data_points = rejected
    response.partial_success.error_message = "names too long"
    return response.SerializeToString()


def test_a_partial_success_across_a_retry_counts_the_rejected_points_as_dropped(
        stand_in: StandIn, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.forwarder.fanout as fanout
    monkeypatch.setattr(fanout, "RETRY_FIRST_SECS", 0.01)
    sink = OtlpSink(config(stand_in.base_url, points_per_request=2))
    # Request 1 taken with 1 point rejected; request 2 answered 503, then taken with 2 rejected; 3 taken.
    stand_in.answers = [(200, {}, partial(1)), (503, {}), (200, {}, partial(2))]
    runner = SinkRunner(sink, config(stand_in.base_url, points_per_request=2), name="otlp")
    with caplog.at_level(logging.WARNING):
        runner.start()
        runner.put(flush(*(agg(f"c{i}", "counter", 1.0) for i in range(5))))
        runner.request_stop(time.monotonic() + 10)
        runner.finish(time.monotonic() + 10)
    assert len(stand_in.requests) == 4
    assert (runner.delivered, dict(runner.dropped)) == (2, {"rejected": 3})
    assert "rejected 1 data points: names too long" in caplog.text


@pytest.mark.parametrize(("status", "retriable"), [(429, True), (503, True), (500, True), (400, False),
                                                    (401, False), (404, False)])
def test_429_and_5xx_are_retried_and_any_other_4xx_refuses_the_flush_quoting_the_status_message(
        stand_in: StandIn, status: int, retriable: bool) -> None:
    # google.rpc.Status: code 3, message "bad metric" (what OTLP/HTTP answers an error with).
    stand_in.answers = [(status, {"Retry-After": "0"}, b"\x08\x03\x12\x0abad metric")]
    sink = OtlpSink(config(stand_in.base_url))
    with pytest.raises(SinkError) as failed:
        sink.write(flush(agg("c", "counter", 1.0)))
    sink.close()
    assert failed.value.retriable is retriable
    assert f"answered HTTP {status}: bad metric" in str(failed.value)


def test_retry_after_holds_the_next_request_back(stand_in: StandIn) -> None:
    stand_in.answers = [(429, {"Retry-After": "30"})]
    sink = OtlpSink(config(stand_in.base_url))
    the_flush = flush(agg("c", "counter", 1.0))
    with pytest.raises(SinkError):
        sink.write(the_flush)
    with pytest.raises(SinkError, match="Retry-After"):
        sink.write(the_flush)
    sink.close()
    assert len(stand_in.requests) == 1


def test_a_status_message_is_read_from_a_google_rpc_status_or_left_as_it_came() -> None:
    assert status_message(b"\x08\x03\x12\x0abad metric") == b"bad metric"
    assert status_message(b"<html>proxy error</html>") == b"<html>proxy error</html>"


def test_header_values_are_secrets_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OTLP_AUTH", "Bearer hidden-4d1e")
    loaded = config(headers={"api-key": "hidden-77"}, headers_env={"Authorization": "TEST_OTLP_AUTH"})
    assert all(isinstance(value, Secret) for value in loaded.headers.values())
    assert "hidden" not in repr(loaded) and "hidden" not in f"{loaded.headers}"


@pytest.mark.parametrize(("keys", "error"), [
    ({"endpoint": "http://u:p@h:4318"}, "endpoint: put the credentials in headers"),
    ({"endpoint": "grpc://h:4317"}, "endpoint: expected http"),
    ({"temporality": "both"}, "temporality: expected one of delta, cumulative"),
    ({"compression": "zstd"}, "compression: expected one of gzip, none"),
    ({"headers": {"Authorization": "a"}, "headers_env": {"authorization": "HOME"}}, "headers: header 'authorization'"),
    ({"headers_env": {"Authorization": "TEST_OTLP_UNSET_VARIABLE"}}, "headers_env: environment variable"),
    ({"points_per_request": 0}, "points_per_request: must be at least 1"),
])
def test_a_bad_key_is_named(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=f"forwarders.otlp.{error}"):
        load_section(OtlpConfig, {"endpoint": "http://h:4318", **keys}, "forwarders.otlp")
