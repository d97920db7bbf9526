"""The prometheus_remote_write sink's wire and its answers to each HTTP status, against a loopback stand-in
(tests/unit/http_stand_in.py): what the real servers (tests/sinks) cannot be made to do on demand (429
with Retry-After, a 503 between two requests of one flush, checking a bearer token)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest

from harness.wait import wait_for
from stages.common.config import ConfigError, load_section
from stages.common.contract import FlushHeader
from stages.forwarder.sinks.base import Flush, SinkError
from stages.forwarder.sinks.http_post import MAX_RETRY_AFTER_SECS, retry_after_secs
from stages.forwarder.sinks.prometheus_remote_write import (
    PrometheusRemoteWriteConfig,
    PrometheusRemoteWriteSink,
    WriteRequest,
)
from tests.unit.http_stand_in import StandIn, serve

STAMP = 1795597610


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    yield from serve("/api/v1/write?tenant=a")


def series(stand_in: StandIn, index: int) -> dict[str, tuple[float, int]]:
    """Request ``index``'s series, decoded: labels as ``name{k="v",...}`` → (value, timestamp)."""
    request = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(stand_in.requests[index][2])))
    decoded = {}
    for one in request.timeseries:
        names = [label.name for label in one.labels]
        assert names == sorted(names), names
        labels = {label.name: label.value for label in one.labels}
        rest = ",".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
        (sample,) = one.samples
        decoded[f"{labels['__name__']}{{{rest}}}"] = (sample.value, sample.timestamp)
    return decoded


def flush(*aggregates: dict[str, Any]) -> Flush:
    header = FlushHeader(shard=0, shards=1, epoch=1, seq=1, interval_start=STAMP - 10.0, interval=10.0,
                         n=len(aggregates))
    return Flush(header, list(aggregates), 0)


def counter(name: str, value: float, **tags: str) -> dict[str, Any]:
    return {"name": name, "type": "counter", "tags": tags, "timestamp": STAMP, "interval": 10, "value": value,
            "rate": value / 10}


def sink(url: str, **keys: Any) -> PrometheusRemoteWriteSink:
    config = load_section(PrometheusRemoteWriteConfig, {"url": url, **keys}, "forwarders.prometheus_remote_write")
    return PrometheusRemoteWriteSink(config)


def test_a_request_is_remote_write_1_0_with_its_headers_and_a_bearer_token(
        stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RW_TOKEN", "rw-token-9e1f")
    writer = sink(stand_in.url, bearer_token_env="TEST_RW_TOKEN")
    timer = {"name": "api.lat", "type": "timer", "tags": {"quantile": "q", "Zone": "b", "empty": ""},
             "timestamp": STAMP, "interval": 10, "stats": {"count": 4.0, "sum": 100.0, "min": 10.0, "p99_9": 40.0}}
    try:
        writer.write(flush(counter("api.requests", 42.0, env="prod"), timer))
    finally:
        writer.close()
    ((path, headers, _),) = stand_in.requests
    assert path == "/api/v1/write?tenant=a"
    assert {k: headers[k] for k in ("Content-Encoding", "Content-Type", "X-Prometheus-Remote-Write-Version",
                                    "Authorization")} == {
        "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0", "Authorization": "Bearer rw-token-9e1f"}
    ms = STAMP * 1000
    # Labels sorted by name (upper case before "__name__"), the empty tag left out, the summary's own
    # quantile tag renamed.
    assert series(stand_in, 0) == {
        'api_requests_total{env="prod"}': (42.0, ms),
        'api_lat{Zone="b",exported_quantile="q",quantile="0.999"}': (40.0, ms),
        'api_lat_sum{Zone="b",exported_quantile="q"}': (100.0, ms),
        'api_lat_count{Zone="b",exported_quantile="q"}': (4.0, ms),
    }


def test_basic_auth(stand_in: StandIn) -> None:
    writer = sink(stand_in.url, username="pystatsd", password="s3cret")
    writer.write(flush(counter("c", 1.0)))
    writer.close()
    assert stand_in.requests[0][1]["Authorization"] == "Basic cHlzdGF0c2Q6czNjcmV0"


def test_a_flush_resumes_at_the_request_that_failed_and_its_counters_are_added_once(stand_in: StandIn) -> None:
    writer = sink(stand_in.url, samples_per_request=2)
    first = flush(*(counter(f"c{i}", float(i)) for i in range(5)))  # 5 samples: 3 requests
    stand_in.answers = [(204, {}), (503, {})]
    with pytest.raises(SinkError) as failed:
        writer.write(first)
    assert failed.value.retriable and "HTTP 503" in str(failed.value)
    writer.write(first)  # the runner's retry: the very same flush
    # Requests 1 and 2, then 2 again (its very bytes) and 3: the delivered one is not sent again.
    assert len(stand_in.requests) == 4
    assert stand_in.requests[2][2] == stand_in.requests[1][2]
    writer.write(flush(counter("c4", 10.0)))
    writer.close()
    assert series(stand_in, 4) == {"c4_total{}": (14.0, STAMP * 1000)}


def bucketed(counts: list[float], le: list[float] | None = None, stamp: int = STAMP,
             tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": "api.lat", "type": "timer", "tags": tags or {}, "timestamp": stamp, "interval": 10,
            "stats": {"count": counts[-1], "sum": 10.0 * counts[-1], "min": 1.0, "p90": 9.0},
            "buckets": {"le": le or [0.5, 1.0, 1e6], "counts": counts}}


def test_timers_as_histogram_sends_cumulative_le_buckets_added_up_across_flushes(stand_in: StandIn) -> None:
    writer = sink(stand_in.url, timers_as="histogram")
    try:
        writer.write(flush(bucketed([1.0, 3.0, 4.0, 5.0], tags={"le": "tag"})))
        writer.write(flush(bucketed([0.0, 2.0, 2.0, 2.0], stamp=STAMP + 10, tags={"le": "tag"})))
        # Other bounds (a reload): the series starts again at 0, a counter reset.
        writer.write(flush(bucketed([1.0, 1.0], [2.0], stamp=STAMP + 20, tags={"le": "tag"})))
    finally:
        writer.close()
    at = STAMP * 1000  # the flushes' header's interval end
    labels = 'exported_le="tag"'  # the series' own le tag, as Prometheus renames a clashing label
    assert series(stand_in, 1) == {
        f'api_lat_bucket{{{labels},le="0.5"}}': (1.0, at), f'api_lat_bucket{{{labels},le="1.0"}}': (5.0, at),
        f'api_lat_bucket{{{labels},le="1e+06"}}': (6.0, at), f'api_lat_bucket{{{labels},le="+Inf"}}': (7.0, at),
        f"api_lat_sum{{{labels}}}": (70.0, at), f"api_lat_count{{{labels}}}": (7.0, at)}
    assert series(stand_in, 2) == {
        f'api_lat_bucket{{{labels},le="2.0"}}': (1.0, at), f'api_lat_bucket{{{labels},le="+Inf"}}': (1.0, at),
        f"api_lat_sum{{{labels}}}": (10.0, at), f"api_lat_count{{{labels}}}": (1.0, at)}


def test_summaries_by_default_and_for_timers_without_buckets(stand_in: StandIn) -> None:
    plain = {**bucketed([5.0]), "name": "plain"}
    del plain["buckets"]
    for timers_as in ("summary", "histogram"):
        writer = sink(stand_in.url, timers_as=timers_as)
        try:
            writer.write(flush(bucketed([1.0, 3.0, 4.0, 5.0]), plain))
        finally:
            writer.close()
    stamp = STAMP * 1000
    summary = {'api_lat{quantile="0.9"}': (9.0, stamp), "api_lat_sum{}": (50.0, stamp),
               "api_lat_count{}": (5.0, stamp), 'plain{quantile="0.9"}': (9.0, stamp), "plain_sum{}": (50.0, stamp),
               "plain_count{}": (5.0, stamp)}
    assert series(stand_in, 0) == summary
    assert {k: v for k, v in series(stand_in, 1).items() if k.startswith("plain")} == {
        k: v for k, v in summary.items() if k.startswith("plain")}
    assert 'api_lat_bucket{le="+Inf"}' in series(stand_in, 1)


def test_retry_after_holds_the_next_request_back(stand_in: StandIn) -> None:
    writer = sink(stand_in.url)
    stand_in.answers = [(429, {"Retry-After": "1"})]
    the_flush = flush(counter("c", 1.0))
    with pytest.raises(SinkError) as busy:
        writer.write(the_flush)
    assert busy.value.retriable
    with pytest.raises(SinkError, match="Retry-After") as held:
        writer.write(the_flush)
    assert held.value.retriable and len(stand_in.requests) == 1

    def delivered() -> bool:
        try:
            writer.write(the_flush)
        except SinkError:
            return False
        return True

    started = time.monotonic()
    wait_for(delivered, 5, "the write once Retry-After has passed")
    assert time.monotonic() - started > 0.5 and len(stand_in.requests) == 2
    writer.close()


@pytest.mark.parametrize(("status", "retriable"), [(500, True), (502, True), (429, True), (400, False),
                                                    (401, False), (403, False), (404, False), (409, False)])
def test_5xx_and_429_are_retried_and_any_other_4xx_refuses_the_flush(stand_in: StandIn, status: int,
                                                                     retriable: bool) -> None:
    writer = sink(stand_in.url)
    stand_in.answers = [(status, {})]
    with pytest.raises(SinkError) as failed:
        writer.write(flush(counter("c", 1.0)))
    writer.close()
    assert failed.value.retriable is retriable
    assert ("check the credentials" in str(failed.value)) is (status in (401, 403))


def test_retry_after_is_read_as_seconds_or_a_date_and_bounded() -> None:
    assert retry_after_secs("7") == 7.0
    assert retry_after_secs(None) == retry_after_secs("soon") == 0.0
    assert retry_after_secs("86400") == MAX_RETRY_AFTER_SECS
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < retry_after_secs(in_a_minute) <= 60


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "http://u:p@h:9090/api/v1/write"}, "url: put the credentials in username and password"),
    ({"url": "ftp://h/api/v1/write"}, "url: expected http"),
    ({"url": "http://h/w", "bearer_token": "t", "username": "u"}, "bearer_token: set either"),
    ({"url": "http://h/w", "password": "p"}, "username: a password needs a username"),
    ({"url": "http://h/w", "samples_per_request": 0}, "samples_per_request: must be at least 1"),
    ({"url": "http://h/w", "bearer_token_env": "TEST_RW_UNSET_VARIABLE"}, "bearer_token_env: environment variable"),
    ({"url": "http://h/w", "timers_as": "buckets"}, "timers_as: expected one of summary, histogram, got 'buckets'"),
])
def test_a_bad_key_is_named(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=f"forwarders.prometheus_remote_write.{error}"):
        load_section(PrometheusRemoteWriteConfig, keys, "forwarders.prometheus_remote_write")
