"""Delivery through a broker outage, a buffer too small for it, and a planned stop with data in flight."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.traffic import SteadyTraffic, counter_increments
from harness.wait import wait_for

pytestmark = pytest.mark.kafka


def kafka_pipeline(broker: Any, topic: str, flush_interval: float = 1.0, **settings: Any) -> Pipeline:
    pipeline = Pipeline(flush_interval=flush_interval)
    pipeline.config["forwarders"]["kafka"] = {"kafka_broker": broker.bootstrap, "kafka_topic": topic,
                                              "format": "json", **settings.pop("sink", {})}
    pipeline.config.update(settings)
    pipeline.save_config()
    return pipeline


def kafka_aggregates(broker: Any, topic: str, name: str) -> list[tuple[dict[str, Any], bytes]]:
    records = broker.consume_all(topic, timeout_s=20)
    return [(json.loads(value), dict(headers)["pystatsd-id"]) for _, value, headers in records
            if json.loads(value)["name"] == name]


def test_broker_outage_of_30s_loses_nothing_and_duplicates_nothing(kafka_broker: Any) -> None:
    pipeline = kafka_pipeline(kafka_broker, "outage")
    try:
        pipeline.start()
        with SteadyTraffic(pipeline.statsd_port, counter_increments(["outage.c"])) as traffic:
            time.sleep(5)
            kafka_broker.stop()
            time.sleep(30)
            kafka_broker.start()
            time.sleep(5)
        sent = traffic.total
        in_file = wait_for(lambda: sum(a["value"] for a in pipeline.series("outage.c")) == sent
                           and pipeline.series("outage.c"), 10, "the file sink to have every increment")
        wait_for(lambda: sum(a["value"] for a, _ in kafka_aggregates(kafka_broker, "outage", "outage.c")) >= sent,
                 60, "Kafka to catch up after the outage", every=1.0)
    finally:
        pipeline.stop()
        pipeline.cleanup()
    in_kafka = kafka_aggregates(kafka_broker, "outage", "outage.c")
    ids = [rid for _, rid in in_kafka]
    assert len(ids) == len(set(ids)), "an aggregate was delivered twice"
    assert sum(a["value"] for a, _ in in_kafka) == sent
    assert sorted(a["timestamp"] for a, _ in in_kafka) == sorted(a["timestamp"] for a in in_file)
    # Within the partition the intervals arrive in order.
    stamps = [a["timestamp"] for a, _ in in_kafka]
    assert stamps == sorted(stamps)


def test_buffer_too_small_for_the_outage_drops_oldest_and_counts_exactly(kafka_broker: Any) -> None:
    pipeline = kafka_pipeline(kafka_broker, "small-buffer", self_metrics_prefix="",
                              sink={"buffer_max_aggregates": 3})
    try:
        pipeline.start()
        with SteadyTraffic(pipeline.statsd_port, counter_increments(["small.c"])):
            time.sleep(3)
            kafka_broker.stop()
            # From here no interval can go to Kafka until the broker is back: only the buffer holds it.
            broker_gone = time.time()
            time.sleep(12)
            kafka_broker.start()
            time.sleep(3)
        wait_for(lambda: pipeline.sink_figures().get("kafka", {}).get("waiting") == 0, 30,
                 "the Kafka sink to send what its buffer held")
    finally:
        pipeline.stop()
    produced = pipeline.series("small.c")
    log = pipeline.log("forwarder")
    pipeline.cleanup()
    delivered = kafka_aggregates(kafka_broker, "small-buffer", "small.c")
    totals = re.findall(
        r"Sink kafka is behind and its buffer is full: dropped the oldest \d+ aggregates \((\d+) in all\)", log)
    assert totals, f"the forwarder never said how many it dropped:\n{log}"
    dropped = int(totals[-1])
    assert dropped > 0
    assert len(delivered) + dropped == len(produced)
    delivered_stamps = {a["timestamp"] for a, _ in delivered}
    assert delivered_stamps <= {a["timestamp"] for a in produced}
    # What went is the oldest: every interval that ended after the broker had gone (an aggregate's
    # timestamp is its interval's end) and still arrived, held in the buffer or sent once the broker
    # was back, is newer than every lost one, but the one the sink was writing when the broker went
    # (a write in progress is retried, not dropped: only the queue behind it drops its oldest).
    # Dropping the newest instead would deliver the outage's first intervals and lose later ones.
    lost = {a["timestamp"] for a in produced} - delivered_stamps
    held_or_later = sorted(stamp for stamp in delivered_stamps if stamp > broker_gone)
    assert lost and len(held_or_later) > 1
    assert held_or_later[1] > max(lost), f"lost {sorted(lost)}, yet delivered {held_or_later}"


def test_planned_stop_delivers_the_partial_interval(kafka_broker: Any) -> None:
    pipeline = kafka_pipeline(kafka_broker, "planned-stop", flush_interval=5.0)
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        for i in range(500):
            pipeline.send(f"stop.c:2|c|#n:{i % 5}", pipeline.statsd_port)
        time.sleep(0.3)
    finally:
        pipeline.stop()
        pipeline.cleanup()
    delivered = kafka_aggregates(kafka_broker, "planned-stop", "stop.c")
    assert sum(a["value"] for a, _ in delivered) == 1000
    assert {a["tags"]["n"] for a, _ in delivered} == {"0", "1", "2", "3", "4"}
