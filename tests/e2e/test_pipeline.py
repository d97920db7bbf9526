"""The whole daemon under supervisord (1 s interval, two shards), fed by real clients, read from the file sink."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import statsd
from datadog.dogstatsd import DogStatsd

from harness.pipeline import Pipeline, running_pipeline, total
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.e2e

AGENT_TAGS = {"environment": "stage", "role": "cfbroker"}


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    yield from running_pipeline({"agent": {"tags": AGENT_TAGS}})


def test_original_readme_json_examples(pipeline: Pipeline) -> None:
    trace = {"metric_name": "user.apptrace", "metric_type": "trace", "stage": "Init app",
             "host": "192.44.2.2", "env": "development"}
    guage = {"metric_name": "user.latency", "metric_type": "guage", "value": 4.4, "stage": "Init app",
             "host": "192.44.2.2", "env": "development"}
    pipeline.wait_interval_start()
    for _ in range(3):
        pipeline.send(json.dumps(trace))
    pipeline.send(json.dumps(guage))
    tags = {"stage": "Init app", "host": "192.44.2.2", "env": "development", **AGENT_TAGS}

    traces = pipeline.wait_series("user.apptrace")
    assert len(traces) == 1
    assert traces[0]["type"] == "trace"
    assert traces[0]["tags"] == tags
    assert traces[0]["value"] == 3
    assert traces[0]["interval"] == 1
    assert isinstance(traces[0]["timestamp"], int)

    gauges = pipeline.series("user.latency")
    assert gauges, "the gauge never arrived"
    assert {g["value"] for g in gauges} == {4.4}
    assert gauges[0]["tags"] == tags and gauges[0]["type"] == "gauge"
    # A gauge is sent every interval until it idles out, stamped with consecutive interval ends.
    stamps = sorted(g["timestamp"] for g in gauges)
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))


def test_pypi_statsd_client(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    client = statsd.StatsClient("127.0.0.1", pipeline.statsd_port, prefix="etsy")
    # The client samples with random.random(); pinning it makes every sampled call send.
    monkeypatch.setattr(random, "random", lambda: 0.0)
    pipeline.wait_interval_start()
    client.incr("hits", 5)
    client.incr("hits")
    client.decr("hits", 2)
    client.incr("sampled", 1, rate=0.25)
    client.gauge("temp", 20)
    client.gauge("temp", 3, delta=True)
    client.gauge("temp", -5, delta=True)
    for ms in (10, 20, 30, 40):
        client.timing("lat", ms)
    for user in ("ann", "bob", "ann", "cy"):
        client.set("users", user)
    with client.pipeline() as pipe:
        pipe.incr("piped", 2)
        pipe.incr("piped", 3)
    client.close()

    hits = pipeline.wait_series("etsy.hits")
    assert [(a["value"], a["rate"]) for a in hits] == [(4, 4)]
    assert pipeline.series("etsy.hits")[0]["tags"] == AGENT_TAGS
    assert total(pipeline.series("etsy.sampled")) == 4  # 1 at rate 0.25
    assert total(pipeline.series("etsy.piped")) == 5
    assert {a["value"] for a in pipeline.series("etsy.temp")} == {18}
    (lat,) = pipeline.series("etsy.lat")
    assert lat["type"] == "timer"
    assert lat["stats"] == {"count": 4, "sum": 100, "min": 10, "max": 40, "mean": 25, "median": 25,
                            "stddev": pytest.approx(11.180339887), "p50": 20, "p90": 40, "p95": 40, "p99": 40}
    assert [a["value"] for a in pipeline.series("etsy.users")] == [3]


def test_pypi_datadog_client_with_tags(pipeline: Pipeline) -> None:
    client = DogStatsd(host="127.0.0.1", port=pipeline.statsd_port, constant_tags=["service:web"],
                       disable_telemetry=True)
    pipeline.wait_interval_start()
    for page in ("home", "home", "cart"):
        client.increment("dd.views", tags=[f"page:{page}", "canary"])
    client.increment("dd.views", 10, tags=["page:home", "canary"], sample_rate=1)
    client.gauge("dd.queue", 7, tags=["q:jobs"])
    for value in (1, 2, 3, 4, 5):
        client.histogram("dd.size", value, tags=["kind:img"])
    client.distribution("dd.dist", 2.5)
    client.timing("dd.time", 12)
    client.set("dd.visitors", "v1")
    client.set("dd.visitors", "v2")
    client.flush()

    home = pipeline.wait_series("dd.views", page="home")
    assert [(a["value"], a["tags"]) for a in home] == [
        (12, {"page": "home", "canary": "", "service": "web", **AGENT_TAGS})]
    assert total(pipeline.series("dd.views", page="cart")) == 1
    assert {a["value"] for a in pipeline.series("dd.queue", q="jobs")} == {7}
    (size,) = pipeline.series("dd.size", kind="img")
    assert size["type"] == "histogram"
    assert (size["stats"]["count"], size["stats"]["median"], size["stats"]["p90"]) == (5, 3, 5)
    (dist,) = pipeline.series("dd.dist")
    assert dist["type"] == "distribution" and dist["stats"]["sum"] == 2.5
    (timer,) = pipeline.series("dd.time")
    assert timer["type"] == "timer" and timer["stats"]["max"] == 12
    assert [a["value"] for a in pipeline.series("dd.visitors")] == [2]
    client.close_socket()


def test_restarting_one_stage_leaves_the_others_running(pipeline: Pipeline) -> None:
    for program in ("receiver", "aggregator:aggregator-1", "forwarder"):
        before = pipeline.status()
        pipeline.ctl("restart", program, check=True)
        wait_for(pipeline.all_running, 20, "every stage RUNNING again")
        after = pipeline.status()
        assert after[program][1] != before[program][1], f"{program} was not restarted"
        assert {k: v for k, v in after.items() if k != program} == {k: v for k, v in before.items() if k != program}

    name = f"after.restart.{time.monotonic_ns()}"
    pipeline.wait_interval_start()
    for _ in range(5):
        pipeline.send(f"{name}:1|c", pipeline.statsd_port)
    assert total(pipeline.wait_series(name)) == 5


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_shards_and_the_forwarder_yield_the_cpu_to_the_receiver(pipeline: Pipeline) -> None:
    supervisord = nice(int((pipeline.run_dir / "supervisord.pid").read_text()))

    def niceness() -> dict[str, int]:
        return {name.split(":")[-1]: nice(pid) - supervisord for name, (_, pid) in pipeline.status().items() if pid}

    # supervisord calls a stage running before its interpreter has set its own priority.
    expected = {"receiver": 0, "aggregator-0": 10, "aggregator-1": 10, "forwarder": 10}
    with contextlib.suppress(WaitTimeout):
        wait_for(lambda: niceness() == expected, 10, "every stage to set its priority")
    assert niceness() == expected


def test_shard_count_is_one_edit() -> None:
    pipeline = Pipeline(shards=4)
    try:
        pipeline.start()
        aggregators = [name for name in pipeline.status() if name.startswith("aggregator:")]
        assert sorted(aggregators) == [f"aggregator:aggregator-{k}" for k in range(4)]
        names = [f"four.{i}" for i in range(12)]
        pipeline.wait_interval_start()
        for name in names:
            pipeline.send(f"{name}:2|c", pipeline.statsd_port)
        wait_for(lambda: all(pipeline.series(n) for n in names), 10, "every name's aggregate")
        assert {n: total(pipeline.series(n)) for n in names} == {n: 2 for n in names}
    finally:
        pipeline.stop()
        pipeline.cleanup()


def test_bad_config_ends_fatal_with_the_key_named() -> None:
    pipeline = Pipeline({"flush_intervall": 5})
    try:
        pipeline.start(wait_running=False)
        # EXITED: a stage that took longer than startsecs to fail (tests/e2e/test_start_failures.py).
        wait_for(lambda: all(state in ("FATAL", "EXITED") for state, _ in pipeline.status().values())
                 and pipeline.status(), 40, "every stage to be given up on")
        assert "flush_intervall: unknown key (did you mean 'flush_interval'?)" in pipeline.log("receiver")
    finally:
        pipeline.stop()
        pipeline.cleanup()
