"""DogStatsD beyond plain metrics, through the whole daemon (1 s interval, two shards), read from the file sink:
``|T`` timestamps (and the JSON ``timestamp``) land in the interval they name or are counted, never filed
elsewhere; ``|c:`` container ids become a tag with ``keep_container_id``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from harness.pipeline import Pipeline, running_pipeline, total
from harness.wait import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    for pipeline in running_pipeline({"keep_container_id": True}):
        listening(pipeline)
        yield pipeline


def listening(pipeline: Pipeline) -> None:
    """RUNNING comes before the receiver binds its ports: what is sent before then is lost unseen."""
    wait_for(lambda: pipeline.send("dog.listening:1|c") or pipeline.series("dog.listening"), 15,
             "the receiver to listen", every=0.5)


def bad_lines(pipeline: Pipeline, reason: str) -> float:
    return total(pipeline.series("pystatsd.receiver.bad_lines", reason=reason))


def test_a_stamped_metric_lands_in_the_interval_it_names_or_is_counted_and_not_delivered(pipeline: Pipeline) -> None:
    pipeline.wait_interval_start()
    # The interval open now (1 s long, its edges on whole seconds), the one an hour ago, the next one.
    stamp = int(time.time())
    pipeline.send(f"dog.stamped:42|g|T{stamp}\ndog.stamped.count:3|c|T{stamp}|#k:v\n"
                  f"dog.old:1|g|T{stamp - 3600}\ndog.future:1|g|T{stamp + 1}\ndog.late:1|c|T{stamp - 1}\n"
                  f"dog.unstamped:1|c")
    pipeline.send(json.dumps([
        {"metric_name": "dog.json", "metric_type": "counter", "value": 7, "timestamp": stamp + 0.5},
        {"metric_name": "dog.json.old", "metric_type": "counter", "value": 1, "timestamp": stamp - 3600}]))

    wait_for(lambda: pipeline.shards_flushed_after(stamp + 2), 15, "every shard to flush two intervals on")
    gauges = pipeline.series("dog.stamped")
    # A gauge is reported every interval from the one it was set in: the first is the stamped interval.
    assert gauges and min(g["timestamp"] for g in gauges) == stamp + 1 and {g["value"] for g in gauges} == {42}
    assert [(a["timestamp"], a["value"], a["tags"]) for a in pipeline.series("dog.stamped.count")] == [
        (stamp + 1, 3, {"k": "v"})]
    assert [(a["timestamp"], a["value"]) for a in pipeline.series("dog.json")] == [(stamp + 1, 7)]
    # The unstamped neighbour of the same datagram, in the same interval: the stamped ones took the normal path.
    assert [a["timestamp"] for a in pipeline.series("dog.unstamped")] == [stamp + 1]
    for name in ("dog.old", "dog.future", "dog.late", "dog.json.old"):
        assert pipeline.series(name) == [], name
    wait_for(lambda: (bad_lines(pipeline, "too_old"), bad_lines(pipeline, "in_future")) == (3, 1), 10,
             "the receiver to count 3 too_old and 1 in_future")


def test_a_container_id_becomes_a_tag_when_kept(pipeline: Pipeline) -> None:
    pipeline.wait_interval_start()
    pipeline.send("dog.ci:1|c|c:abc123\ndog.ci:2|c|c:abc123|#container_id:own\ndog.ci:4|c|c:",
                  port=pipeline.statsd_port)
    ci = pipeline.wait_series("dog.ci")
    assert sorted((a["tags"].get("container_id", "-"), a["value"]) for a in ci) == [("-", 4), ("abc123", 1), ("own", 2)]


def test_events_and_service_checks_reach_the_file_sink_as_records_counted_per_kind(pipeline: Pipeline) -> None:
    pipeline.send("_e{6,11}:deploy|v2.1\\nready|d:1700000000|h:web-1|k:rel|p:low|s:ci|t:success|#env:prod|c:ci9\n"
                  "_sc|db.up|2|d:1700000001|h:db-1|#env:prod|m:disk | full\n_sc|db.up|9\n_e{3,1}:ab|c")
    pipeline.send("_sc|cache.up|0", port=pipeline.statsd_port)
    wait_for(lambda: len([a for a in pipeline.aggregates() if a["type"] in ("event", "service_check")]) == 3, 10,
             "three records in the file sink")
    got = sorted((a for a in pipeline.aggregates() if a["type"] in ("event", "service_check")), key=lambda a: a["name"])
    assert got[0]["timestamp"] >= 1_700_000_000 and got[0]["name"] == "cache.up"  # stamped when read
    assert got == [
        {"name": "cache.up", "type": "service_check", "tags": {}, "timestamp": got[0]["timestamp"], "status": 0,
         "status_name": "ok", "hostname": "", "message": ""},
        {"name": "db.up", "type": "service_check", "tags": {"env": "prod"}, "timestamp": 1700000001, "status": 2,
         "status_name": "critical", "hostname": "db-1", "message": "disk | full"},
        {"name": "deploy", "type": "event", "tags": {"env": "prod", "container_id": "ci9"}, "timestamp": 1700000000,
         "text": "v2.1\nready", "hostname": "web-1", "aggregation_key": "rel", "priority": "low",
         "source_type_name": "ci", "alert_type": "success"}]
    wait_for(lambda: [total(pipeline.series("pystatsd.receiver.records", kind=kind)) for kind in
                      ("event", "service_check")] == [1, 2]
             and bad_lines(pipeline, "bad_service_check") == 1 and bad_lines(pipeline, "bad_event") == 1, 10,
             "the receiver to count 1 event and 2 service checks passed on, and the 2 malformed ones")
