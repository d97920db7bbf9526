"""Prometheus remote write 1.0 sink: each flush as protobuf ``WriteRequest`` s, Snappy-compressed, POSTed to ``url``.

What a series becomes is the scrape sink's rule (:mod:`stages.forwarder.sinks.prometheus`, its
:class:`SeriesStore` and :func:`samples`): names and label names sanitised by Prometheus' rules, a
counter or trace a running total ``<name>_total`` kept since the sink started (a restart of the
forwarder starts again at 0: a counter reset, which Prometheus' ``rate()`` and ``increase()`` expect),
a gauge or set as it is, a timer, histogram or distribution a summary (``quantile`` from each
percentile of its interval, ``_sum`` and ``_count`` running totals) or, with ``timers_as: histogram``
and where the aggregate carries ``buckets``, a histogram (``_bucket`` for each ``le`` and ``+Inf``,
``_sum`` and ``_count``, all running totals, cumulative as counters are). Each sample is stamped with the
end of its interval, in milliseconds; a tag with an empty value is left out (Prometheus reads an
empty label as no label).

The message types are built at run time from a descriptor written here (:func:`_prompb_classes`):
``protobuf`` is the encoder, but no maintained package ships prompb's generated classes alone (the
ones that have them carry a whole exporter with them), and the four messages remote write 1.0 uses
are a few lines of descriptor. Snappy's block format (what the protocol asks, not the framed one)
is ``cramjam``'s.

A flush goes in requests of at most ``samples_per_request`` samples, each encoded and compressed
once; after a failure the same flush resumes at the request that failed, so a request that was
delivered is never sent again. The request that failed may have been stored all the same (the
answer was lost): sent again, each of its samples repeats the last one of its series exactly, which
Prometheus takes as a no-op; a sample older than its series' last is refused as out of order,
which is why nothing delivered is ever sent again and flushes go in order.

Answers: 2xx is delivered. A connection error, 429 or 5xx is retried, and never before the time a
``Retry-After`` asked for. Any other answer (400 for a sample out of order or a bad label, 401 and
403 for credentials, 404) refuses the flush: retrying would fail the same way, so it is dropped,
counted (``rejected``) and logged.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from stages import __version__
from stages.common.config import Secret, resolve_secret
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig
from stages.forwarder.sinks.http_post import HttpPoster, PasswordKeys, PushKeys, check_http_url
from stages.forwarder.sinks.progress import FlushProgress
from stages.forwarder.sinks.prometheus import SeriesStore, Touched, samples

log = logging.getLogger(__name__)

#: The headers remote write 1.0 asks for on every request.
PROTOCOL_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": f"pystatsd/{__version__}",
}


#: What ``timers_as`` may say a timer, histogram or distribution becomes.
TIMER_FORMS = ("summary", "histogram")


def _prompb_classes() -> tuple[Any, Any]:
    """prompb's ``WriteRequest`` and ``TimeSeries`` (remote write 1.0's field numbers), from a descriptor.

    In a pool of their own: another module's ``prometheus.*`` messages cannot clash with them.
    """
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="pystatsd/prompb_remote.proto", package="prometheus",
                                              syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        described = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            repeated = proto.LABEL_REPEATED if type_name else proto.LABEL_OPTIONAL
            described.field.add(name=field_name, number=number, type=kind, label=repeated,
                                type_name=type_name or None)

    message("Label", ("name", 1, proto.TYPE_STRING, ""), ("value", 2, proto.TYPE_STRING, ""))
    message("Sample", ("value", 1, proto.TYPE_DOUBLE, ""), ("timestamp", 2, proto.TYPE_INT64, ""))
    message("TimeSeries", ("labels", 1, proto.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, proto.TYPE_MESSAGE, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, proto.TYPE_MESSAGE, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.TimeSeries")))


WriteRequest, TimeSeries = _prompb_classes()


@dataclass(frozen=True)
class PrometheusRemoteWriteConfig(SinkConfig, PasswordKeys, PushKeys):
    url: str
    bearer_token: Secret | None = None
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    samples_per_request: int = 2000
    #: ``summary``: every timer-like a summary; ``histogram``: those that carry buckets a histogram.
    timers_as: str = "summary"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_http_url(self.url, "url", "username and password")
        self.check_push_keys()
        if self.samples_per_request < 1:
            raise ValueError("samples_per_request: must be at least 1")
        if self.timers_as not in TIMER_FORMS:
            raise ValueError(f"timers_as: expected one of {', '.join(TIMER_FORMS)}, got {self.timers_as!r}")
        token = resolve_secret(self.bearer_token, self.bearer_token_env, self.bearer_token_file, "bearer_token")
        password = resolve_secret(self.password, self.password_env, self.password_file, "password")
        object.__setattr__(self, "bearer_token", token)
        object.__setattr__(self, "password", password)
        if password is not None and not self.username:
            raise ValueError("username: a password needs a username")
        if token is not None and self.username:
            raise ValueError("bearer_token: set either a bearer token or username and password, not both")

    def authorization(self) -> Secret | None:
        """The ``Authorization`` header the config asks for, or None."""
        if self.bearer_token is not None:
            return Secret(f"Bearer {self.bearer_token.reveal()}")
        if self.username:
            password = self.password.reveal() if self.password is not None else ""
            return Secret("Basic " + base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii"))
        return None


class PrometheusRemoteWriteSink(BaseSink[PrometheusRemoteWriteConfig], name="prometheus_remote_write",
                                config_type=PrometheusRemoteWriteConfig, remote=True):
    def __init__(self, config: PrometheusRemoteWriteConfig) -> None:
        super().__init__(config)
        self.poster = HttpPoster(config.url, f"remote write at {config.url}", config.timeout_secs)
        self.auth = config.authorization()
        #: The running totals: what makes counters cumulative, kept across flushes by design.
        self.store = SeriesStore(config.expire_after_secs, histograms=config.timers_as == "histogram")
        #: A part is one request's compressed body: a flush resumes at the request that failed.
        self.progress: FlushProgress[bytes] = FlushProgress(self._requests)

    def _requests(self, flush: Flush) -> list[bytes]:
        """The flush's samples as compressed WriteRequests; adds its counters to the running totals, once."""
        stamp = round((flush.header.interval_start + flush.header.interval) * 1000)
        touched: Touched = {}
        for chunk in flush.chunks():
            self.store.update(chunk, time.monotonic(), touched)
        bodies: list[bytes] = []
        request, count = WriteRequest(), 0
        for key, series in touched.items():
            name = key[0]
            for sample_name, labels, value in samples(name, series):
                # Sorted by name, as the protocol asks; Prometheus' own __name__ among them.
                pairs = sorted([("__name__", sample_name), *((k, v) for k, v in labels.items() if v)])
                request.timeseries.append(TimeSeries(labels=[{"name": k, "value": v} for k, v in pairs],
                                                     samples=[{"value": value, "timestamp": stamp}]))
                count += 1
                if count == self.config.samples_per_request:
                    bodies.append(_compressed(request))
                    request, count = WriteRequest(), 0
        if count:
            bodies.append(_compressed(request))
        return bodies

    def write(self, flush: Flush) -> None:
        self.poster.wait_over()
        headers = dict(PROTOCOL_HEADERS)
        if self.auth is not None:
            headers["Authorization"] = self.auth.reveal()
        for body in self.progress.resume(flush):
            self.poster.check(*self.poster.post(body, headers))
            self.progress.delivered(1)
        self.progress.finish()

    def close(self) -> None:
        self.poster.close()


def _compressed(request: Any) -> bytes:
    """A WriteRequest as remote write sends it: serialised, then Snappy's block format."""
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
