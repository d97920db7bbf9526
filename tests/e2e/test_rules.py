"""Rules through a real pipeline: dotted names become one name with tags in the file sink, exactly
aggregated; a dropped metric is counted per rule; a reload applies a changed rule from then on, and a
bad one is refused with the running rules kept."""

from __future__ import annotations

import time

import pytest

from harness.pipeline import Pipeline
from harness.wait import wait_for

pytestmark = pytest.mark.e2e

API = {"match": "api.*.*.*.latency", "name": "api.latency", "tags": {"host": "$1", "method": "$2", "endpoint": "$3"}}
RULES = [API, {"match": "debug.*", "drop": True}]
LINES = ["api.host-7.GET.users.latency:12|ms", "api.host-7.GET.users.latency:20|ms",
         "api.host-8.POST.orders.latency:5|ms", "debug.x:1|c", "debug.y:1:2|c", "kept:1|c"]


def stats(pipeline: Pipeline, name: str, **tags: str) -> list[tuple[float, float]]:
    return [(a["stats"]["count"], a["stats"]["sum"]) for a in pipeline.series(name, **tags)]


def own_total(pipeline: Pipeline, name: str, **tags: str) -> float:
    return sum(a["value"] for a in pipeline.series(f"pystatsd.receiver.{name}", **tags))


def names(pipeline: Pipeline) -> set[str]:
    return {a["name"] for a in pipeline.aggregates() if not a["name"].startswith("pystatsd.")}


def sent_and_flushed(pipeline: Pipeline) -> None:
    """LINES sent in one datagram at the start of an interval, and that interval flushed by every shard."""
    pipeline.wait_interval_start()
    stamp = time.time()
    pipeline.send("\n".join(LINES), pipeline.statsd_port)
    wait_for(lambda: pipeline.shards_flushed_after(stamp), 15, "every shard to flush the interval")


def test_dotted_names_become_one_name_with_tags_drops_are_counted_and_a_reload_changes_the_rule() -> None:
    with Pipeline(config={"rules": RULES}, flush_interval=1.0) as pipeline:
        sent_and_flushed(pipeline)
        assert stats(pipeline, "api.latency", host="host-7", method="GET", endpoint="users") == [(2.0, 32.0)]
        assert stats(pipeline, "api.latency", host="host-8", method="POST", endpoint="orders") == [(1.0, 5.0)]
        assert names(pipeline) == {"api.latency", "kept"}
        # every metric counted once: mapped or dropped by its rule, or matched by none
        wait_for(lambda: own_total(pipeline, "rule_dropped", rule="rules[1]") == 3, 10, "the drops counted")
        assert own_total(pipeline, "rule_mapped", rule="rules[0]") == 3
        assert own_total(pipeline, "rule_unmatched") == 1
        assert own_total(pipeline, "metrics") == 4

        pipeline.config["rules"] = [{**API, "name": "api.requests.latency"}, RULES[1]]
        pipeline.save_config()
        done = pipeline.pystatsd("reload")
        assert done.returncode == 0, done.stderr
        sent_and_flushed(pipeline)
        assert stats(pipeline, "api.requests.latency", host="host-7", method="GET") == [(2.0, 32.0)]
        assert stats(pipeline, "api.latency", host="host-7", method="GET") == [(2.0, 32.0)]  # nothing more
        wait_for(lambda: own_total(pipeline, "rule_dropped", rule="rules[1]") == 6, 10, "the drops counted")

        # A bad rule: the command refuses it, and so does the receiver a SIGHUP reaches; the rules run on.
        before = pipeline.status()
        pipeline.config["rules"] = [{**API, "nmae": "x"}]
        pipeline.save_config()
        refused = pipeline.pystatsd("reload")
        assert refused.returncode == 78
        assert "rules[0].nmae: unknown key (did you mean 'name'?)" in refused.stderr
        pipeline.ctl("signal", "HUP", "receiver", check=True)
        wait_for(lambda: "Reload refused, the running config and rules are kept: rules[0].nmae" in
                 pipeline.log("receiver"), 10, "the receiver to refuse")
        assert pipeline.status() == before
        sent_and_flushed(pipeline)
        assert stats(pipeline, "api.requests.latency", host="host-7", method="GET") == [(2.0, 32.0)] * 2


def test_the_other_kinds_are_read_from_the_config_with_a_mapping_file_relative_to_it() -> None:
    pipeline = Pipeline(config={"mapping_config": "mapping.yml", "dogstatsd_mapper_profiles": [
        {"name": "jobs", "prefix": "job.", "mappings": [{"match": "job.*.duration", "name": "job.duration",
                                                         "tags": {"job": "$1"}}]}]}, flush_interval=1.0)
    (pipeline.dir / "mapping.yml").write_text('mappings:\n- match: svc.*.calls\n  name: svc_calls\n'
                                              '  labels: {svc: "$1"}\n')
    with pipeline:
        pipeline.wait_interval_start()
        stamp = time.time()
        pipeline.send("svc.db.calls:2|c\nsvc.db.calls:3|c\njob.backup.duration:7|ms\nother:1|c", pipeline.statsd_port)
        wait_for(lambda: pipeline.shards_flushed_after(stamp), 15, "every shard to flush the interval")
        assert [a["value"] for a in pipeline.series("svc_calls", svc="db")] == [5.0]
        assert [a["stats"]["sum"] for a in pipeline.series("job.duration", job="backup")] == [7.0]
        assert names(pipeline) == {"svc_calls", "job.duration", "other"}
        wait_for(lambda: own_total(pipeline, "rule_mapped", rule="mapping_config[0]") == 2, 10, "the counts")
        assert own_total(pipeline, "rule_mapped", rule="dogstatsd_mapper_profiles[0].mappings[0]") == 1
        assert own_total(pipeline, "rule_unmatched") == 1


def test_a_mapping_s_scale_multiplies_every_value_of_its_series_before_it_is_aggregated() -> None:
    pipeline = Pipeline(config={"mapping_config": "mapping.yml"}, flush_interval=1.0)
    (pipeline.dir / "mapping.yml").write_text(
        'mappings:\n- match: net.*.bytes\n  name: net_bits\n  scale: 8\n  labels: {dir: "$1"}\n'
        '- match: lat.*\n  name: lat_ms\n  scale: 0.25\n  labels: {svc: "$1"}\n'
        '- match: temp\n  name: temp\n  scale: -0.5\n')  # the name kept as sent: scaled all the same
    with pipeline:
        # RUNNING is a second alive: on a busy machine the receiver may bind its port later, and a
        # datagram sent before is lost; a probe sent until one reaches the sink says it is listening
        wait_for(lambda: pipeline.send("probe:1|c", pipeline.statsd_port) or pipeline.series("probe"), 15,
                 "a probe through the pipeline")
        pipeline.wait_interval_start()
        stamp = time.time()
        pipeline.send("net.in.bytes:100|c\nnet.in.bytes:30|c|@0.5\nlat.web:12|ms\nlat.web:20:4|ms\n"
                      "temp:20|g\ntemp:+4|g\nplain:3|c\nnet.in.bytes:1e300|c", pipeline.statsd_port)
        wait_for(lambda: pipeline.shards_flushed_after(stamp), 15, "every shard to flush the interval")
        assert [a["value"] for a in pipeline.series("net_bits", dir="in")] == [(100 + 30 / 0.5) * 8]
        assert [(a["stats"]["count"], a["stats"]["sum"], a["stats"]["min"], a["stats"]["max"])
                for a in pipeline.series("lat_ms", svc="web")] == [(3.0, 9.0, 1.0, 5.0)]
        assert pipeline.series("temp")[0]["value"] == -12.0
        assert [a["value"] for a in pipeline.series("plain")] == [3.0]
        wait_for(lambda: own_total(pipeline, "rule_mapped", rule="mapping_config[2]") == 2, 10, "the counts")
        assert own_total(pipeline, "rule_mapped", rule="mapping_config[0]") == 2
        assert own_total(pipeline, "rule_mapped", rule="mapping_config[1]") == 3
        # 1e300 bits is beyond what any value may be (1e300): refused and counted, the shard's sums finite
        assert own_total(pipeline, "bad_lines", reason="out_of_range") == 1


def test_a_mapping_s_ttl_forgets_its_gauge_after_ceil_ttl_over_interval_idle_intervals() -> None:
    # ttl 2.5 s at 1 s intervals: 3 intervals (the one it was set in and two idle ones), where a gauge
    # of no mapping, and one of a mapping without a ttl, stay on expire_after_intervals (30)
    pipeline = Pipeline(config={"mapping_config": "mapping.yml"}, flush_interval=1.0)
    (pipeline.dir / "mapping.yml").write_text(
        'mappings:\n- match: temp.*\n  name: temp\n  ttl: 2500ms\n  labels: {room: "$1"}\n'
        '- match: load.*\n  name: load\n  labels: {cpu: "$1"}\n')
    with pipeline:
        wait_for(lambda: pipeline.send("probe:1|c", pipeline.statsd_port) or pipeline.series("probe"), 15,
                 "a probe through the pipeline")
        pipeline.wait_interval_start()
        pipeline.send("temp.kitchen:21|g\nload.0:3|g\nplain:7|g", pipeline.statsd_port)
        wait_for(lambda: len(pipeline.series("plain")) >= 7, 30, "seven intervals of the plain gauge")
        assert [a["value"] for a in pipeline.series("temp", room="kitchen")] == [21.0] * 3
        assert len(pipeline.series("load", cpu="0")) >= 7
        # set in the same interval as the plain gauge: reported in its first three, and no later
        assert ([a["timestamp"] for a in pipeline.series("temp")]
                == [a["timestamp"] for a in pipeline.series("plain")][:3])
