"""The benchmark's smoke run of pystatsd-sinks (python -m bench.run --smoke --systems pystatsd-sinks): the mix
through the pipeline with every new sink on, each to its real server on loopback, delivered exactly at the
file sink, and every server holding exactly what the file sink does."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.destinations import INFLUXDB_V2, OTLP, REMOTE_WRITE
from tests.bench.smoke import run_smoke, runs_of
from tests.sinks.conftest import installed_servers  # noqa: F401 (a fixture: the sink servers installed or built)

pytestmark = pytest.mark.e2e


@pytest.mark.usefixtures("installed_servers")
def test_bench_smoke_with_every_new_sink_delivers_to_each_server(tmp_path: Path) -> None:
    saved = run_smoke(["pystatsd-sinks"], tmp_path, timeout=150)
    [run] = runs_of(saved)
    assert run["system"] == "pystatsd-sinks"
    assert run["delivered"] == run["sent"] > 0, run
    assert not run["ring_wrapped"], run
    # each server read back once the load was over: all the file sink delivered, which is all that was sent
    [check] = saved["destinations"]
    assert check["system"] == "pystatsd-sinks" and check["load"] == "smoke", check
    assert check["delivered"] == run["sent"], check
    assert check["received"] == {OTLP: run["sent"], REMOTE_WRITE: run["sent"], INFLUXDB_V2: run["sent"]}, check
