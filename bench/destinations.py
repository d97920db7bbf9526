"""The destinations of the system pystatsd-sinks: every sink issue 26 added, each writing to its real server
on loopback, and what each server received, read back as the benchmark counts delivery.

The servers are the sink tests' own (tests/sinks/servers.py, installed or built by
tests/sinks/install_servers.sh, which ``make bench`` runs): an OpenTelemetry Collector for the ``otlp`` sink,
and VictoriaMetrics for ``prometheus_remote_write`` (``/api/v1/write``) and for ``influxdb`` with
``api_version: 2`` (its ``/api/v2/write``). They run on the systems' cores, beside the pipeline, as
destinations on the same host would. Nothing here reads them during a run: ``received`` is asked once
a load is over (it parses everything the servers stored), never inside a measured run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.tally import COUNTER_PREFIX, TIMER_PREFIX, JsonLinesTail, underscored
from tests.sinks.servers import OTELCOL, OtelCollector, VictoriaMetricsServer

#: The keys of ``received``: a sink and the server it writes to.
OTLP = "otlp (OpenTelemetry Collector)"
REMOTE_WRITE = "prometheus_remote_write (VictoriaMetrics)"
INFLUXDB_V2 = "influxdb api_version 2 (VictoriaMetrics)"


class OtlpTally:
    """Counter increments and timer samples of the load's names in the OTLP JSON the Collector's file exporter
    writes, one request a line: delta Sums (the otlp sink's default temporality) and Histograms' counts."""

    def __init__(self) -> None:
        self.total = 0.0

    def add(self, request: dict[str, Any]) -> None:
        for resource in request["resourceMetrics"]:
            for scope in resource["scopeMetrics"]:
                for metric in scope["metrics"]:
                    name = metric["name"]
                    if name.startswith(COUNTER_PREFIX) and "sum" in metric:
                        # OTLP JSON writes an int64 as a string
                        self.total += sum(float(point.get("asDouble", point.get("asInt", 0)))
                                          for point in metric["sum"]["dataPoints"])
                    elif name.startswith(TIMER_PREFIX) and "histogram" in metric:
                        self.total += sum(int(point["count"]) for point in metric["histogram"]["dataPoints"])


def cumulative_total(series: dict[str, dict[int, float]]) -> float:
    """What running totals (Prometheus' counters, a summary's ``_count``) add up to over every series: each
    series' increases, a fall counting as a reset to 0 (the forwarder restarted or the series expired)."""
    total = 0.0
    for samples in series.values():
        last = 0.0
        for _, value in sorted(samples.items()):
            total += value - last if value >= last else value
            last = value
    return total


def interval_total(series: dict[str, dict[int, float]]) -> float:
    """What per-interval values (statsd's counters in InfluxDB's line protocol) add up to over every series."""
    return sum(sum(samples.values()) for samples in series.values())


class SinkServers:
    """The Collector and VictoriaMetrics in a temp dir of their own, on free loopback ports."""

    def __init__(self) -> None:
        if not OTELCOL.exists() or shutil.which("victoria-metrics") is None:
            raise SystemExit("pystatsd-sinks needs the sink tests' servers: bash tests/sinks/install_servers.sh "
                             "(make bench runs it)")
        self.dir = Path(tempfile.mkdtemp(prefix="pstsinks"))
        self.otelcol = OtelCollector(self.dir / "otelcol")
        self.victoria = VictoriaMetricsServer(self.dir / "victoria-metrics")
        self.otlp = OtlpTally()
        self.otlp_lines = JsonLinesTail(self.otelcol.out_path, self.otlp.add)

    def start(self) -> None:
        try:
            self.otelcol.start()
            self.victoria.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            self.otelcol.stop()
            self.victoria.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [pid for pid in (self.otelcol.process.pid, self.victoria.process.pid) if pid]

    def forwarders(self) -> dict[str, Any]:
        """The sinks' settings: each sink's defaults but for where it writes. VictoriaMetrics ignores the
        InfluxDB 2 org, bucket and token (they are required by the sink, so given)."""
        return {
            "otlp": {"endpoint": self.otelcol.endpoint},
            "prometheus_remote_write": {"url": self.victoria.write_url},
            "influxdb": {"api_version": 2, "url": self.victoria.url, "org": "pystatsd", "bucket": "bench",
                         "token": "unused", "precision": "ms"},
        }

    def received(self) -> dict[str, float]:
        """Counter increments plus timer samples of the load's names that each server holds so far."""
        self.otlp_lines.poll()
        counters, timers = underscored(COUNTER_PREFIX), underscored(TIMER_PREFIX)
        remote_write = (cumulative_total(self.victoria.samples(named(counters, "_total")))
                        + cumulative_total(self.victoria.samples(named(timers, "_count"))))
        # line protocol in VictoriaMetrics: field f of measurement m is the series m_f
        influx = (interval_total(self.victoria.samples(named(COUNTER_PREFIX, "_value")))
                  + interval_total(self.victoria.samples(named(TIMER_PREFIX, "_count"))))
        return {OTLP: self.otlp.total, REMOTE_WRITE: remote_write, INFLUXDB_V2: influx}


def named(prefix: str, suffix: str) -> str:
    """A selector of the series whose names start with ``prefix`` and end with ``suffix``."""
    return f'{{__name__=~"{prefix.replace(".", "[.]")}.+{suffix}"}}'
