"""The Kafka sink against the real broker: each format, the original daemon's config, SASL, the sink contract."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.wait import wait_for
from stages.common.config import load_section
from stages.forwarder.sinks import SINKS
from stages.forwarder.sinks import kafka as kafka_sink
from stages.forwarder.sinks.base import SinkError
from stages.forwarder.sinks.kafka import KafkaConfig, KafkaSink
from tests.unit.test_sink_conformance import minimal_config, sinks_with_key, write_leaves_the_aggregates_alone

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
ORIGINAL_CONFIG = REPO / "tests" / "data" / "configs" / "original.yaml"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")


def kafka_pipeline(broker: Any, topic: str, **sink: Any) -> Pipeline:
    """A pipeline writing to ``topic`` and, for comparison, to its file sink."""
    pipeline = Pipeline({"forwarders": {
        "kafka": {"kafka_broker": broker.bootstrap, "kafka_topic": topic, **sink},
        "file": {"path": "PLACEHOLDER"},
    }})
    pipeline.config["forwarders"]["file"]["path"] = str(pipeline.out_path)
    pipeline.save_config()
    return pipeline


def send_corpus(pipeline: Pipeline) -> None:
    pipeline.wait_interval_start()
    pipeline.send("k.c:3|c|#env:prod\nk.c:3|c|#env:prod\nk.t:10|ms\nk.t:30|ms\nk.g:7|g", pipeline.statsd_port)
    pipeline.send(json.dumps({"metric_name": "k.trace", "metric_type": "trace", "host": "h1"}))


def own(records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> list[Any]:
    """The records that are not the daemon's self-metrics."""
    return [r for r in records if r[1] is not None and b"pystatsd." not in r[1]]


def wait_records(broker: Any, topic: str, count: int, timeout: float = 20) -> list[Any]:
    """The records in ``topic`` that are not self-metrics, once there are ``count`` of them.

    The pipeline's first send creates the topic, so until then it holds nothing.
    """

    def enough() -> list[Any] | None:
        records = own(broker.consume_all(topic, absent_is_empty=True))
        return records if len(records) >= count else None

    records: list[Any] = wait_for(enough, timeout, f"{count} records in {topic}", every=0.5)
    return records


def corpus_records(pipeline: Pipeline, broker: Any, topic: str, count: int) -> list[Any]:
    """The corpus through a whole run of ``pipeline``: the first ``count`` records of it in ``topic``."""
    try:
        pipeline.start()
        send_corpus(pipeline)
        return wait_records(broker, topic, count)
    finally:
        pipeline.stop()
        pipeline.cleanup()


def test_json_format_is_the_file_sinks_aggregates_and_kcat_agrees(kafka_broker: Any) -> None:
    pipeline = kafka_pipeline(kafka_broker, "fmt-json", format="json")
    try:
        pipeline.start()
        send_corpus(pipeline)
        wait_records(kafka_broker, "fmt-json", 4)
    finally:
        pipeline.stop()
    # Read after the stop, which delivered the last (partial) interval to both sinks.
    records = own(kafka_broker.consume_all("fmt-json"))
    in_file = [a for a in pipeline.aggregates() if not a["name"].startswith("pystatsd.")]
    pipeline.cleanup()
    in_kafka = [json.loads(value) for _, value, _ in records]
    assert sorted(in_kafka, key=json.dumps) == sorted(in_file, key=json.dumps)
    counter = next(a for a in in_kafka if a["name"] == "k.c")
    assert (counter["value"], counter["tags"]) == (6, {"env": "prod"})
    assert all(key == json.loads(value)["name"].encode() for key, value, _ in records)
    ids = [dict(headers)["pystatsd-id"] for _, _, headers in records]
    assert len(set(ids)) == len(ids)
    by_kcat = [json.loads(v) for v in kafka_broker.consume_with_kcat("fmt-json") if b"pystatsd." not in v]
    assert sorted(by_kcat, key=json.dumps) == sorted(in_kafka, key=json.dumps)


def test_original_format_flattens_tags_and_splits_timer_stats(kafka_broker: Any) -> None:
    pipeline = kafka_pipeline(kafka_broker, "fmt-original", kafka_apikey="key-1", kafka_tenant_id="tenant-9")
    records = corpus_records(pipeline, kafka_broker, "fmt-original", 4 + 11)
    events = {json.loads(v)["name"]: json.loads(v) for _, v, _ in records}
    counter = events["k.c"]
    assert TIMESTAMP.match(counter.pop("@timestamp"))
    assert counter == {"name": "k.c", "value": 6, "@version": "1", "apikey": "key-1", "tenant_id": "tenant-9",
                       "env": "prod"}
    assert events["k.trace"]["value"] == 1 and events["k.trace"]["host"] == "h1"
    assert events["k.g"]["value"] == 7
    assert {name: events[name]["value"] for name in events if name.startswith("k.t.")} == {
        "k.t.count": 2, "k.t.sum": 40, "k.t.min": 10, "k.t.max": 30, "k.t.mean": 20, "k.t.median": 20,
        "k.t.stddev": 10, "k.t.p50": 10, "k.t.p90": 30, "k.t.p95": 30, "k.t.p99": 30}


def test_influx_format_is_line_protocol(kafka_broker: Any) -> None:
    records = corpus_records(kafka_pipeline(kafka_broker, "fmt-influx", format="influx"), kafka_broker, "fmt-influx", 4)
    lines = {v.decode().split(" ")[0].split(",")[0]: v.decode() for _, v, _ in records}
    assert re.fullmatch(r"k\.c,env=prod value=6\.0,rate=6\.0 \d{19}", lines["k.c"])
    assert re.fullmatch(r"k\.trace,host=h1 value=1\.0 \d{19}", lines["k.trace"])
    assert lines["k.t"].split(" ")[1].startswith("count=2.0,sum=40.0,min=10.0,max=30.0,mean=20.0,")
    stamp = int(lines["k.c"].split(" ")[2])
    assert stamp % 1_000_000_000 == 0 and abs(stamp / 1e9 - time.time()) < 60


def test_original_example_config_with_only_broker_topic_and_port_changed(kafka_broker: Any) -> None:
    config = yaml.safe_load(ORIGINAL_CONFIG.read_text())
    config["forwarders"]["kafka"].update(kafka_broker=kafka_broker.bootstrap, kafka_topic="original-cfg")
    pipeline = Pipeline(config, test_defaults=False)
    pipeline.config["bind_port"] = pipeline.port
    pipeline.save_config()
    readme_trace = {"metric_name": "user.apptrace", "metric_type": "trace", "stage": "Init app",
                    "host": "192.44.2.2", "env": "development"}
    readme_guage = {"metric_name": "user.latency", "metric_type": "guage", "value": 4.4, "stage": "Init app",
                    "host": "192.44.2.2", "env": "development"}
    try:
        pipeline.start()
        for _ in range(2):
            pipeline.send(json.dumps(readme_trace))
        pipeline.send(json.dumps(readme_guage))
        # The original's 10 s interval: wait for the first flush after the sends.
        records = wait_records(kafka_broker, "original-cfg", 2, timeout=30)
    finally:
        pipeline.stop()
        pipeline.cleanup()
    events = {json.loads(v)["name"]: json.loads(v) for _, v, _ in records}
    expected_tags = {"stage": "Init app", "host": "192.44.2.2", "env": "development", "environment": "stage",
                     "role": "cfbroker"}
    common = {"@version": "1", "apikey": "74444444444x6xxxxxxxxxxxxxxxxxxxxx",
              "tenant_id": "xxxxxxxx69xxxxx69bcxxxxx1adxxxxx", **expected_tags}
    trace, guage = events["user.apptrace"], events["user.latency"]
    assert TIMESTAMP.match(trace.pop("@timestamp")) and TIMESTAMP.match(guage.pop("@timestamp"))
    assert trace == {"name": "user.apptrace", "value": 2, **common}
    assert guage == {"name": "user.latency", "value": 4.4, **common}


def sasl_pipeline(broker: Any, topic: str, apikey: str) -> Pipeline:
    """A pipeline that logs in to the broker's SASL listener with ``apikey``."""
    pipeline = kafka_pipeline(broker, topic, security_protocol="SASL_PLAINTEXT", kafka_apikey=apikey, format="json")
    pipeline.config["forwarders"]["kafka"]["kafka_broker"] = broker.sasl_bootstrap
    pipeline.save_config()
    return pipeline


def test_sasl_plain_with_the_api_key(kafka_broker: Any) -> None:
    records = corpus_records(sasl_pipeline(kafka_broker, "sasl-ok", "test-api-key-123"), kafka_broker, "sasl-ok", 4)
    assert any(json.loads(v)["name"] == "k.c" and json.loads(v)["value"] == 6 for _, v, _ in records)


def test_wrong_api_key_is_a_clear_error_never_a_crash_loop_nor_a_leak(kafka_broker: Any) -> None:
    sentinel = "PYSTATSD-SENTINEL-7f3a"
    pipeline = sasl_pipeline(kafka_broker, "sasl-bad", sentinel)
    try:
        pipeline.start()
        pid = pipeline.status()["forwarder"][1]
        send_corpus(pipeline)
        message = wait_for(lambda: re.search(r"Sink kafka cannot deliver.*", pipeline.log("forwarder")), 30,
                           "the forwarder to report the failed authentication")
        assert "authentication failed" in message.group(0)
        assert "sasl_password" in message.group(0)
        time.sleep(3)
        assert pipeline.status()["forwarder"] == ("RUNNING", pid)
        # The file sink beside it still delivers.
        assert pipeline.series("k.c")
        logs = "".join(p.read_text(errors="replace") for p in (pipeline.run_dir / "log").iterdir())
        logs += (pipeline.run_dir / "supervisord.log").read_text()
        assert sentinel not in logs
        assert pipeline.log("forwarder").count("cannot deliver") == 1  # at most once a minute
    finally:
        pipeline.stop(sink_never_delivers=True)
        pipeline.cleanup()


def test_retrying_an_unreachable_broker_costs_no_file_descriptors(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # kafka-python 3.0 strands a failed producer's sockets in a reference cycle; the sink reclaims them.
    monkeypatch.setattr(kafka_sink, "BOOTSTRAP_TIMEOUT_MS", 300)
    # As in the forwarder (setup_logging): kafka-python's records, kept by pytest, would pin the sockets.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    config = load_section(KafkaConfig, {"kafka_broker": f"127.0.0.1:{free_port()}", "kafka_topic": "t"},
                          "forwarders.kafka")
    sink = KafkaSink(config)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with warnings.catch_warnings():
        # The reclaimed sockets were never closed by their owner: Python says so as they go.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(SinkError):
            sink.open()
        before = open_fds()
        for _ in range(4):
            with pytest.raises(SinkError, match="no Kafka broker reachable"):
                sink.open()
        assert open_fds() <= before


@pytest.mark.parametrize("name", sinks_with_key({"kafka_broker"}))
def test_writing_a_flush_leaves_the_aggregates_alone(kafka_broker: Any, name: str) -> None:
    # The conformance test's write (tests/unit/test_sink_conformance.py), for the sinks only a real broker can take.
    write_leaves_the_aggregates_alone(SINKS[name], minimal_config(name, kafka_broker=kafka_broker.bootstrap))
