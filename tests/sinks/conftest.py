"""pytest wiring for the sink tests: the real servers (InfluxDB 1.x and 1.8.3, carbon, Prometheus,
VictoriaMetrics), installed or built when missing and started once per session."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sinks.servers import (
    INFLUXD_1_8,
    CarbonServer,
    InfluxServer,
    OtelCollector,
    PrometheusServer,
    VictoriaMetricsServer,
    serving,
)

HERE = Path(__file__).resolve().parent
INFLUX_ADMIN = ("pystatsd", "influx-test-secret-4b1d")


@pytest.fixture(scope="session")
def installed_servers() -> None:
    """Debian's influxdb, graphite-carbon, prometheus and victoria-metrics, and InfluxDB 1.8.3 and an
    OpenTelemetry Collector built, when missing."""
    # A missing server fails the run, never skips it: skipped tests would pass CI testing nothing.
    result = subprocess.run(["bash", str(HERE / "install_servers.sh")], capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        pytest.fail(f"tests/sinks/install_servers.sh exited {result.returncode}:\n{result.stdout}{result.stderr}",
                    pytrace=False)


@pytest.fixture(scope="session")
def influx(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    yield from serving(InfluxServer(tmp_path_factory.mktemp("influx"), *INFLUX_ADMIN))


@pytest.fixture(scope="session")
def influx_1_8(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """InfluxDB 1.8.3: the 1.x that serves InfluxDB 2's /api/v2/write."""
    yield from serving(InfluxServer(tmp_path_factory.mktemp("influx18"), *INFLUX_ADMIN, program=str(INFLUXD_1_8)))


@pytest.fixture(scope="session")
def carbon(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarbonServer]:
    yield from serving(CarbonServer(tmp_path_factory.mktemp("carbon")))


@pytest.fixture(scope="session")
def prometheus(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    yield from serving(PrometheusServer(tmp_path_factory.mktemp("prometheus")))


@pytest.fixture(scope="session")
def victoria_metrics(installed_servers: None,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    yield from serving(VictoriaMetricsServer(tmp_path_factory.mktemp("victoria")))


@pytest.fixture(scope="session")
def otelcol(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelCollector]:
    """An OpenTelemetry Collector built from the Go module proxy (build_otelcol.sh), OTLP in, a file out."""
    yield from serving(OtelCollector(tmp_path_factory.mktemp("otelcol")))
