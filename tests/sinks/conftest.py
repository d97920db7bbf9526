"""pytest wiring for the sink tests: the real InfluxDB and carbon servers, installed and started once."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.sinks.servers import CarbonServer, InfluxServer, PrometheusServer, Server, VictoriaMetricsServer

HERE = Path(__file__).resolve().parent
INFLUX_ADMIN = ("pystatsd", "influx-test-secret-4b1d")
S = TypeVar("S", bound=Server)


@pytest.fixture(scope="session")
def installed_servers() -> None:
    """Debian's influxdb, graphite-carbon, prometheus and victoria-metrics, installed when missing."""
    # A missing server fails the run, never skips it: skipped tests would pass CI testing nothing.
    result = subprocess.run(["bash", str(HERE / "install_servers.sh")], capture_output=True, text=True,
                            timeout=900)
    if result.returncode != 0:
        pytest.fail(f"tests/sinks/install_servers.sh exited {result.returncode}:\n{result.stdout}{result.stderr}",
                    pytrace=False)


def serving(server: S) -> Iterator[S]:
    """The server started, and stopped once the session is over."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def influx(installed_servers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    yield from serving(InfluxServer(tmp_path_factory.mktemp("influx"), *INFLUX_ADMIN))


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
