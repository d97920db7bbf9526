"""OTLP sink: each flush as OTLP/HTTP protobuf ``ExportMetricsServiceRequest`` s POSTed to ``<endpoint>/v1/metrics``.

What an aggregate becomes (one data point each): a counter a Sum, monotonic unless its interval's
sum is negative; a trace a monotonic Sum; a gauge a Gauge; a set a Gauge of its size; a timer,
histogram or distribution a Histogram of its count, sum, min and max, with explicit bounds and
bucket counts where the aggregate carries ``buckets`` (the shard counted its values into the bounds
``histogram_buckets`` gives its name). Without them it has no explicit bounds, one bucket holding the
count: buckets estimated from percentiles would be counts no one measured (the percentiles
themselves are not sent). Tags are the data points' attributes, save those
named by ``resource_tags``, which go to the Resource: the metrics are grouped per resource.

``temporality: delta`` (the default, what statsd produces) sends each interval as it is, its start and
end as the point's times. ``cumulative`` sends running totals per series (counters and traces,
histograms' count, sum, min, max and bucket counts), kept since the series was first seen by this sink: that first
interval's start is the start time of every later point, and a restart of the forwarder, a reload
that changes the sink, a histogram's bounds that change, or a series idle for ``expire_after_secs``
starts it again (a reset, as the
protocol expects). The messages are the ``opentelemetry-proto`` package's; ``protobuf`` encodes them.

A flush goes in requests of at most ``points_per_request`` data points (made a chunk of the flush's
aggregates at a time, a request never spanning two), each encoded and compressed once; after a
failure the flush resumes at the request that failed, so a request that was delivered is never sent
again. Answers follow :mod:`stages.forwarder.sinks.http_post` (429 and 5xx retried
after their ``Retry-After``, any other refused and counted); a 2xx whose partial success says some
data points were rejected counts those as dropped (each is one aggregate). Header values are secrets:
never logged, masked wherever the config is shown.
"""

from __future__ import annotations

import gzip
import logging
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from stages import __version__
from stages.common.config import Secret, resolve_secret
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig
from stages.forwarder.sinks.http_post import HttpPoster, PushKeys, check_http_url
from stages.forwarder.sinks.progress import ChunkedProgress

log = logging.getLogger(__name__)

#: The path OTLP/HTTP takes metrics at, below the endpoint (as OTEL_EXPORTER_OTLP_ENDPOINT is read).
METRICS_PATH = "/v1/metrics"
TEMPORALITIES = {"delta": AGGREGATION_TEMPORALITY_DELTA, "cumulative": AGGREGATION_TEMPORALITY_CUMULATIVE}
COMPRESSIONS = ("gzip", "none")
SUMS, GAUGES, HISTOGRAMS = ("counter", "trace"), ("gauge", "set"), ("timer", "histogram", "distribution")
#: A forgotten series is looked for at most this often.
PURGE_EVERY_SECS = 1.0

#: (tag, value) pairs, sorted: a resource's or a data point's attributes.
Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OtlpConfig(SinkConfig, PushKeys):
    endpoint: str
    headers: dict[str, Secret] = field(default_factory=dict)
    headers_env: dict[str, str] = field(default_factory=dict)
    headers_file: dict[str, str] = field(default_factory=dict)
    temporality: str = "delta"
    compression: str = "gzip"
    resource_tags: list[str] = field(default_factory=list)
    points_per_request: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        check_http_url(self.endpoint, "endpoint", "headers")
        if self.temporality not in TEMPORALITIES:
            raise ValueError(f"temporality: expected one of {', '.join(TEMPORALITIES)}, got {self.temporality!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression: expected one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        self.check_push_keys()
        if self.points_per_request < 1:
            raise ValueError("points_per_request: must be at least 1")
        # Every header in one map, each value a Secret wherever it came from.
        headers: dict[str, Secret] = {}
        for name, value, env, path in ([(n, v, None, None) for n, v in self.headers.items()]
                                       + [(n, None, v, None) for n, v in self.headers_env.items()]
                                       + [(n, None, None, v) for n, v in self.headers_file.items()]):
            if not name or name.lower() in (h.lower() for h in headers):
                raise ValueError(f"headers: header {name!r} is empty or given twice (headers, headers_env, "
                                 "headers_file)")
            try:
                secret = resolve_secret(value, env, path, "headers")
            except ValueError as exc:
                raise ValueError(f"{exc} (header {name})") from None
            headers[name] = secret if secret is not None else Secret("")
        object.__setattr__(self, "headers", headers)

    @property
    def url(self) -> str:
        """Where the requests go: the endpoint's path (if any) followed by ``/v1/metrics``."""
        parts = urllib.parse.urlsplit(self.endpoint)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + METRICS_PATH))


@dataclass
class _Running:
    """One series' totals since its start (cumulative temporality)."""

    start_ns: int
    updated: float
    value: float = 0.0
    monotonic: bool = True
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    #: A histogram's explicit bounds (None: no buckets), and its running count per bucket
    bounds: list[float] | None = None
    buckets: list[int] = field(default_factory=list)


def _nanos(secs: float) -> int:
    return round(secs * 1_000_000_000)


def _bounds(aggregate: dict[str, Any]) -> list[float] | None:
    """A histogram's explicit bounds: its buckets' ``le``, or None when it has no buckets."""
    buckets = aggregate.get("buckets")
    return None if buckets is None else list(buckets["le"])


def bucket_counts(cumulative: list[float]) -> list[int]:
    """OTLP's bucket_counts (one per bound and one past the last, each its own bucket's) of an aggregate's
    cumulative ``counts``: each rounded to a whole count first, so they add up to its rounded count."""
    whole = [round(c) for c in cumulative]
    return [high - low for low, high in zip([0, *whole], whole, strict=False)]


def _attributes(pairs: Attributes) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]


class OtlpEncoder:
    """Aggregates to ExportMetricsServiceRequests, with the running totals of cumulative temporality."""

    def __init__(self, config: OtlpConfig) -> None:
        self.config = config
        self.temporality = TEMPORALITIES[config.temporality]
        self.cumulative = config.temporality == "cumulative"
        self.resource_tags = set(config.resource_tags)
        self.running: dict[tuple[Attributes, str, str, Attributes], _Running] = {}
        self.next_purge = 0.0

    def requests(self, aggregates: Iterable[dict[str, Any]], now: float) -> Iterator[ExportMetricsServiceRequest]:
        """The aggregates as requests of at most ``points_per_request`` points (one per aggregate), made one
        at a time as they are asked for (a caller that serialises each holds one request's messages, not a
        flush's); adds them to the running totals, so read once per flush."""
        if self.cumulative and now >= self.next_purge:
            # Before this flush's series are looked up: one idle too long starts again, from this interval.
            oldest = now - self.config.expire_after_secs
            self.running = {key: r for key, r in self.running.items() if r.updated >= oldest}
            self.next_purge = now + PURGE_EVERY_SECS
        batch = []
        for aggregate in aggregates:
            batch.append(aggregate)
            if len(batch) == self.config.points_per_request:
                yield self._request(batch, now)
                batch = []
        if batch:
            yield self._request(batch, now)

    def _request(self, aggregates: list[dict[str, Any]], now: float) -> ExportMetricsServiceRequest:
        # resource → (metric name, kind, monotonic) → Metric: one Metric holds every series of a name.
        grouped: dict[Attributes, dict[tuple[str, str, bool], Metric]] = {}
        for aggregate in aggregates:
            kind = aggregate["type"]
            tags = sorted(aggregate["tags"].items())
            resource = tuple((k, v) for k, v in tags if k in self.resource_tags)
            attributes = tuple((k, v) for k, v in tags if k not in self.resource_tags)
            end = _nanos(aggregate["timestamp"])
            start = _nanos(aggregate["timestamp"] - aggregate["interval"])
            running = None
            if self.cumulative and kind not in GAUGES:
                key = (resource, aggregate["name"], kind, attributes)
                running = self.running.get(key)
                if running is None or (kind in HISTOGRAMS and running.bounds != _bounds(aggregate)):
                    # New, or a histogram whose bounds changed (a reload): its totals start again, a reset.
                    running = self.running[key] = _Running(start, now, bounds=_bounds(aggregate))
                running.updated = now
                start = running.start_ns
            metrics = grouped.setdefault(resource, {})
            if kind in SUMS:
                value = aggregate["value"]
                monotonic = kind == "trace" or value >= 0
                if running is not None:
                    running.value += value
                    running.monotonic = running.monotonic and monotonic
                    value, monotonic = running.value, running.monotonic
                metric = self._metric(metrics, aggregate["name"], "sum", monotonic)
                metric.sum.aggregation_temporality = self.temporality
                metric.sum.is_monotonic = monotonic
                metric.sum.data_points.add(attributes=_attributes(attributes), start_time_unix_nano=start,
                                           time_unix_nano=end, as_double=value)
            elif kind in GAUGES:
                point = self._metric(metrics, aggregate["name"], "gauge").gauge.data_points.add(
                    attributes=_attributes(attributes), time_unix_nano=end)
                if kind == "set":
                    point.as_int = round(aggregate["value"])
                else:
                    point.as_double = aggregate["value"]
            elif kind in HISTOGRAMS:
                stats = aggregate["stats"]
                count, total, low, high = round(stats["count"]), stats["sum"], stats["min"], stats["max"]
                bounds = _bounds(aggregate)
                # Without bounds one bucket holds every value (the module docstring says why).
                buckets = [count] if bounds is None else bucket_counts(aggregate["buckets"]["counts"])
                if running is not None:
                    running.count += count
                    running.total += total
                    running.low, running.high = min(running.low, low), max(running.high, high)
                    running.buckets = ([a + b for a, b in zip(running.buckets, buckets, strict=True)]
                                       if running.buckets else buckets)
                    count, total, low, high = running.count, running.total, running.low, running.high
                    buckets = running.buckets
                metric = self._metric(metrics, aggregate["name"], "histogram")
                metric.histogram.aggregation_temporality = self.temporality
                metric.histogram.data_points.add(attributes=_attributes(attributes), start_time_unix_nano=start,
                                                 time_unix_nano=end, count=count, sum=total, min=low, max=high,
                                                 explicit_bounds=bounds or [], bucket_counts=buckets)
        request = ExportMetricsServiceRequest()
        for resource, metrics in grouped.items():
            scope = ScopeMetrics(scope=InstrumentationScope(name="pystatsd", version=__version__),
                                 metrics=list(metrics.values()))
            request.resource_metrics.append(ResourceMetrics(resource=Resource(attributes=_attributes(resource)),
                                                            scope_metrics=[scope]))
        return request

    @staticmethod
    def _metric(metrics: dict[tuple[str, str, bool], Metric], name: str, kind: str, monotonic: bool = False) -> Metric:
        metric = metrics.get((name, kind, monotonic))
        if metric is None:
            metric = metrics[(name, kind, monotonic)] = Metric(name=name)
        return metric


def rejected_points(answer: bytes) -> tuple[int, str]:
    """A 2xx answer's partial success: (data points rejected, the server's message); (0, "") when none."""
    try:
        response = ExportMetricsServiceResponse.FromString(answer)
    except Exception:  # protobuf's DecodeError; an answer that is not the response rejects nothing it says
        return 0, ""
    return response.partial_success.rejected_data_points, response.partial_success.error_message


def status_message(answer: bytes) -> bytes:
    """An error answer's text: the ``message`` of the google.rpc.Status OTLP/HTTP answers with, or the answer."""
    try:
        fields = UnknownFieldSet(empty_pb2.Empty.FromString(answer))
        message = next((f.data for f in fields if f.field_number == 2 and f.wire_type == 2), None)
    except Exception:  # not a Status: a proxy's page, say
        return answer
    return message if isinstance(message, bytes) else answer


class OtlpSink(BaseSink[OtlpConfig], name="otlp", config_type=OtlpConfig, remote=True):
    def __init__(self, config: OtlpConfig) -> None:
        super().__init__(config)
        self.poster = HttpPoster(config.url, f"OTLP receiver at {config.url}", config.timeout_secs)
        self.encoder = OtlpEncoder(config)
        self.headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"pystatsd/{__version__}"}
        if config.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        #: A part is one request's body: a flush resumes at the request that failed. The bodies are made a
        #: chunk of aggregates at a time, so a flush being written holds one chunk's.
        self.progress: ChunkedProgress[bytes] = ChunkedProgress(self._bodies)
        #: Data points of the flush being written that the receiver rejected (partial success).
        self.rejected = 0

    def _bodies(self, flush: Flush, aggregates: list[dict[str, Any]], first: int) -> list[bytes]:
        if first == 0:  # a new flush (its first chunk is encoded once)
            self.rejected = 0
        requests = self.encoder.requests(aggregates, time.monotonic())
        if self.config.compression == "gzip":
            # Level 6, not 9: as small within a few percent, in half the time.
            return [gzip.compress(request.SerializeToString(), compresslevel=6) for request in requests]
        return [request.SerializeToString() for request in requests]

    def write(self, flush: Flush) -> int:
        self.poster.wait_over()
        headers = {**self.headers, **{name: value.reveal() for name, value in self.config.headers.items()}}
        for bodies in self.progress.resume(flush):
            for body in bodies:
                status, answer, retry_after = self.poster.post(body, headers)
                if not 200 <= status < 300:
                    answer = status_message(answer)
                self.poster.check(status, answer, retry_after)
                rejected, message = rejected_points(answer)
                if rejected:
                    log.warning("OTLP receiver at %s rejected %d data points: %s", self.config.url, rejected,
                                message or "(no reason given)")
                    self.rejected += rejected
                self.progress.delivered(1)
        self.progress.finish()
        return self.rejected

    def close(self) -> None:
        self.poster.close()
