"""``pystatsd status`` and the health endpoint against a running instance."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.wait import wait_for

pytestmark = pytest.mark.e2e

SENTINEL = "PYSTATSD-SENTINEL-7f3a"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipeline = Pipeline()
    pipeline.health_port = free_port()  # type: ignore[attr-defined]
    pipeline.config["health_address"] = f"127.0.0.1:{pipeline.health_port}"  # type: ignore[attr-defined]
    # A Kafka sink that can never connect, with a secret that must never show.
    pipeline.config["forwarders"]["kafka"] = {"kafka_broker": f"127.0.0.1:{free_port()}", "kafka_topic": "t",
                                              "kafka_apikey": SENTINEL, "security_protocol": "SASL_PLAINTEXT"}
    pipeline.save_config()
    try:
        pipeline.start()
        yield pipeline
    finally:
        pipeline.stop(sink_never_delivers=True)
        pipeline.cleanup()


def get_health(pipeline: Pipeline) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{pipeline.health_port}/health"  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except urllib.error.URLError:
        # Not listening yet: a forwarder slow to start on a busy machine is RUNNING before it binds.
        return 0, {"status": "not listening", "reasons": []}


def status(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_BIN / "pystatsd", "status", "-c", str(pipeline.config_path), "--run-dir",
                           str(pipeline.run_dir), *args], capture_output=True, text=True, timeout=30)


def test_status_table_and_health_name_the_failing_sink(pipeline: Pipeline) -> None:
    pipeline.send("status.c:1|c\nnot a metric", pipeline.statsd_port)
    code, body = wait_for(lambda: (r := get_health(pipeline))[0] == 503 and any("kafka" in x for x in r[1]["reasons"])
                          and r, 30, "the health endpoint to report the Kafka sink")
    assert body["status"] == "unhealthy"
    assert any(reason.startswith("sink kafka: no Kafka broker reachable") for reason in body["reasons"])
    result = status(pipeline)
    assert result.returncode == 1
    table = result.stdout
    assert "UNHEALTHY" in table and "sink kafka: no Kafka broker reachable" in table
    for process in ("receiver", "aggregator-0", "aggregator-1", "forwarder"):
        assert any(line.startswith(process) and "RUNNING" in line for line in table.splitlines()), table
    assert any(line.startswith("file ") and line.rstrip().endswith("ok") for line in table.splitlines()), table
    assert any(line.startswith("receiver") and "bad_lines 1 (no_value=1)" in line for line in table.splitlines()), table
    report = json.loads(status(pipeline, "--json").stdout)
    assert report["processes"]["forwarder"]["state"] == "RUNNING"
    assert report["stages"]["receiver"]["figures"]["bad_lines"] == {"no_value": 1}
    for text in (table, json.dumps(report), json.dumps(body)):
        assert SENTINEL not in text


def test_a_stopped_shard_makes_health_fail_with_the_reason(pipeline: Pipeline) -> None:
    pipeline.ctl("stop", "aggregator:aggregator-1", check=True)
    try:
        _, body = wait_for(lambda: (r := get_health(pipeline)) and any("aggregator-1: silent" in x
                                                                       for x in r[1]["reasons"]) and r,
                           20, "health to notice the silent shard")
        assert body["status"] == "unhealthy"
        assert "STOPPED" in status(pipeline).stdout
    finally:
        pipeline.ctl("start", "aggregator:aggregator-1", check=True)


def test_health_is_200_when_all_is_well() -> None:
    pipeline = Pipeline()
    port = free_port()
    pipeline.config["health_address"] = f"127.0.0.1:{port}"
    pipeline.save_config()
    pipeline.health_port = port  # type: ignore[attr-defined]
    try:
        pipeline.start()
        code, body = wait_for(lambda: (r := get_health(pipeline))[0] == 200 and r, 20, "a healthy answer")
        assert body == {"status": "ok", "reasons": []}
        assert status(pipeline).returncode == 0
        with pytest.raises(urllib.error.HTTPError) as other:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5)
        assert other.value.code == 404
        other.value.close()
    finally:
        pipeline.stop()
        pipeline.cleanup()
