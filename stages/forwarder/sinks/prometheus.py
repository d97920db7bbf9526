"""Prometheus sink: serves the latest aggregates at ``/metrics`` in the Prometheus text exposition format.

prometheus-client writes the format and serves it (its own threaded HTTP server on
``listen_address:port``); a custom collector answers each scrape from what the flushes left here.

- A counter or trace becomes a Prometheus counter ``<name>_total``: statsd counters are per-interval
  deltas, and a Prometheus counter must only grow, so the sink adds them up since it started (a
  forwarder restart starts again at 0, which Prometheus' ``rate()`` takes as a counter reset).
- A gauge is a gauge (its latest value); so is a set (the distinct members of its latest interval,
  which do not add up across intervals).
- A timer, histogram or distribution is a summary: ``quantile`` from each configured percentile of
  its latest interval (``p99_9`` → ``quantile="0.999"``), ``_sum`` and ``_count`` added up since start.

Names become ``[a-zA-Z_:][a-zA-Z0-9_:]*`` and tag keys ``[a-zA-Z_][a-zA-Z0-9_]*`` (any other
character turns into ``_``, a leading digit gets a ``_`` before it, and a leading ``__``, which
Prometheus keeps for itself, shrinks to one). A summary's own tag ``quantile`` is exposed as
``exported_quantile``, as Prometheus renames clashing labels. A series not updated for
``expire_after_secs`` disappears. Should one name be used with two kinds (a counter and a gauge
``x``), the kind updated last is served.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from sys import intern
from typing import Any, cast

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import utils as prometheus_utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pystatsd.ports import check_port
from stages.forwarder.sinks.base import BaseSink, Flush, SinkConfig, SinkError, not_empty

log = logging.getLogger(__name__)

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
_PERCENTILE = re.compile(r"^p(\d+(?:_\d+)?)$")
#: statsd type → the Prometheus kind it is served as.
KINDS = {"counter": "counter", "trace": "counter", "gauge": "gauge", "set": "gauge", "timer": "summary",
         "histogram": "summary", "distribution": "summary"}
#: Expired series are looked for at most this often when flushes come in (scrapes always look).
PURGE_EVERY_SECS = 1.0
#: prometheus-client's own formatting of a bound (untyped there): ``1.0``, ``0.005``, ``1e+06``, ``+Inf``.
float_to_go_string = cast(Callable[[float], str], prometheus_utils.floatToGoString)


def metric_name(name: str) -> str:
    """A statsd name as a Prometheus metric name."""
    cleaned = _NAME_UNSAFE.sub("_", name)
    return "_" + cleaned if not cleaned or cleaned[0].isdigit() else cleaned


def label_name(name: str) -> str:
    """A tag key as a Prometheus label name (never one of the reserved ``__`` names)."""
    cleaned = _LABEL_UNSAFE.sub("_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return "_" + cleaned.lstrip("_") if cleaned.startswith("__") else cleaned


def le_text(bound: float) -> str:
    """A histogram bound as Prometheus' clients write its ``le`` (``1.0``, ``0.005``, ``1e+06``, ``+Inf``)."""
    return float_to_go_string(bound)


@functools.lru_cache(maxsize=256)
def quantile(stat: str) -> str | None:
    """The quantile label of a percentile statistic (``p90`` → ``0.9``), or None for any other statistic."""
    match = _PERCENTILE.match(stat)
    if match is None:
        return None
    # Decimal, because 99.9 / 100 in binary floating point is 0.9990000000000001.
    return format(Decimal(match.group(1).replace("_", ".")).scaleb(-2).normalize(), "f")


@dataclass(frozen=True)
class PrometheusConfig(SinkConfig):
    listen_address: str = "127.0.0.1"
    port: int = 9102
    expire_after_secs: float = 300.0

    def __post_init__(self) -> None:
        super().__post_init__()
        not_empty(self.listen_address, "listen_address")
        check_port(self.port, "port")
        if self.expire_after_secs <= 0:
            raise ValueError("expire_after_secs: must be more than 0")

    def serves_on(self) -> str:
        host = f"[{self.listen_address}]" if ":" in self.listen_address else self.listen_address
        return f"{host}:{self.port}"


@dataclass(slots=True)
class _Series:
    """What one series shows: a counter's total or a gauge's value, or a summary's parts.

    Kept for every series between flushes (a remote write's running totals, a scrape's answer), so kept
    small: no ``__dict__``, and its strings (name, labels, quantiles) shared with every series that has
    the same (:func:`sys.intern`): 100,000 series took 160 MiB before, each with its own copies."""

    kind: str
    source: str
    #: its key in the store (:data:`SeriesKey`), whose labels it shows
    key: tuple[str, ...]
    updated: float
    value: float = 0.0
    count: float = 0.0
    total: float = 0.0
    quantiles: dict[str, float] = field(default_factory=dict)
    #: A summary shown as a histogram (:class:`SeriesStore`'s ``histograms``): its bounds and running
    #: cumulative count per bound (``+Inf``'s last); None: a summary
    bounds: list[float] | None = None
    buckets: list[float] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        """Its labels, made when asked for (a sample's), not kept: a dict each took a fifth of the store."""
        key = self.key
        return dict(zip(key[2::2], key[3::2], strict=True))


#: A series of the store: (metric name, kind, then its labels sorted, flat: name, value, name, value, ...).
SeriesKey = tuple[str, ...]


def samples(name: str, series: _Series) -> Iterator[tuple[str, dict[str, str], float]]:
    """The samples a series shows, each (sample name, labels, value): the one rendering of the kinds,
    for the scrape endpoint and for remote write alike."""
    if series.kind == "counter":
        # As prometheus-client names a counter: ``_total`` once, whether or not the name ends with it.
        yield (name if name.endswith("_total") else name + "_total"), series.labels, series.value
    elif series.kind == "gauge":
        yield name, series.labels, series.value
    else:
        labels = series.labels
        if series.bounds is None:
            for q, value in series.quantiles.items():
                yield name, {**labels, "quantile": q}, value
        else:
            for bound, value in zip([*series.bounds, math.inf], series.buckets, strict=True):
                yield name + "_bucket", {**labels, "le": le_text(bound)}, value
        yield name + "_sum", labels, series.total
        yield name + "_count", labels, series.count


#: The series an update touched, by their key (whose first is the metric name: :meth:`SeriesStore.update`).
Touched = dict[SeriesKey, _Series]


class SeriesStore:
    """The latest state of every series, keyed by (metric name, kind, labels); safe across threads.

    With ``histograms`` a timer-like that carries ``buckets`` is shown as a histogram (``_bucket`` per
    ``le``, running totals, with ``_sum`` and ``_count``) instead of a summary. Its totals start again
    at 0 (a counter reset) whenever its bounds change: another bound set, or buckets that start or stop
    coming (a reload of ``histogram_buckets``), so that its buckets and ``_count`` always agree.
    """

    def __init__(self, expire_after_secs: float, histograms: bool = False) -> None:
        self.expire_after_secs = expire_after_secs
        self.histograms = histograms
        self.series: dict[SeriesKey, _Series] = {}
        self.lock = threading.Lock()
        self.next_purge = 0.0

    def update(self, aggregates: Iterable[dict[str, Any]], now: float,
               touched: Touched | None = None) -> None:
        """Add the aggregates to their series; ``touched``, when given, gets each series they updated
        (once, however many aggregates a name's sanitising merged into it), by its key."""
        with self.lock:
            for aggregate in aggregates:
                kind = KINDS.get(aggregate["type"])
                if kind is None:
                    continue
                name = intern(metric_name(aggregate["name"]))
                labels = {intern(label_name(k)): intern(v) for k, v in sorted(aggregate["tags"].items())}
                if kind == "summary":
                    # A summary's own label, and a histogram's where timer-likes may be shown as one.
                    for own in ("quantile", "le") if self.histograms else ("quantile",):
                        if own in labels:
                            labels[intern("exported_" + own)] = labels.pop(own)
                key = (name, kind, *itertools.chain.from_iterable(sorted(labels.items())))
                series = self.series.get(key)
                if series is None:
                    series = self.series[key] = _Series(kind, intern(f"{aggregate['type']} {aggregate['name']}"),
                                                        key, now)
                series.updated = now
                if kind == "counter":
                    series.value += aggregate["value"]
                elif kind == "gauge":
                    series.value = aggregate["value"]
                else:
                    stats = aggregate["stats"]
                    buckets = aggregate.get("buckets") if self.histograms else None
                    bounds = None if buckets is None else buckets["le"]
                    if bounds != series.bounds:
                        series.bounds, series.count, series.total = bounds, 0.0, 0.0
                        series.buckets = [0.0] * (len(bounds) + 1) if bounds is not None else []
                    series.count += stats["count"]
                    series.total += stats["sum"]
                    if buckets is None:
                        series.quantiles = {q: v for q, v in ((quantile(s), v) for s, v in stats.items())
                                            if q is not None}
                    else:
                        series.buckets = [a + b for a, b in zip(series.buckets, buckets["counts"], strict=True)]
                if touched is not None:
                    touched[key] = series
            if now >= self.next_purge:
                self._purge(now)
                self.next_purge = now + PURGE_EVERY_SECS

    def _purge(self, now: float) -> None:
        oldest = now - self.expire_after_secs
        for key in [key for key, series in self.series.items() if series.updated < oldest]:
            del self.series[key]

    def snapshot(self, now: float) -> dict[str, list[_Series]]:
        """Live series by metric name, each name of one kind only: the one updated last."""
        with self.lock:
            self._purge(now)
            by_name: dict[str, list[_Series]] = {}
            newest: dict[str, _Series] = {}
            for key, series in self.series.items():
                name = key[0]
                by_name.setdefault(name, []).append(series)
                if name not in newest or series.updated > newest[name].updated:
                    newest[name] = series
            return {name: [dataclasses.replace(s) for s in group if s.kind == newest[name].kind]
                    for name, group in by_name.items()}


class StoreCollector(Collector):
    """A prometheus-client collector serving a :class:`SeriesStore`."""

    def __init__(self, store: SeriesStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        for name, group in sorted(self.store.snapshot(time.monotonic()).items()):
            kind = group[0].kind
            doc = f"pystatsd {group[0].source}"
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=())
            elif kind == "gauge":
                family = GaugeMetricFamily(name, doc, labels=())
            else:
                family = Metric(name, doc, "summary")
            for series in group:
                for sample_name, labels, value in samples(name, series):
                    family.add_sample(sample_name, labels, value)
            yield family


class PrometheusSink(BaseSink[PrometheusConfig], name="prometheus", config_type=PrometheusConfig, remote=True):
    def __init__(self, config: PrometheusConfig) -> None:
        super().__init__(config)
        self.store = SeriesStore(config.expire_after_secs)
        # A registry of its own: only the aggregates are served, not this process's own metrics.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(self.store))
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def open(self) -> None:
        address = f"{self.config.listen_address}:{self.config.port}"
        try:
            self.server, self.thread = start_http_server(self.config.port, self.config.listen_address,
                                                         self.registry)
        except OSError as exc:
            raise SinkError(f"cannot serve /metrics on {address}: {exc.strerror or exc}") from None
        log.info("Serving Prometheus metrics at http://%s/metrics", address)

    def write(self, flush: Flush) -> None:
        self.store.update(flush.each(), time.monotonic())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None
