"""The influxdb sink against a real InfluxDB 1.x: values and tags read back with its query API, an outage."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from tests.sinks.conftest import INFLUX_ADMIN
from tests.sinks.servers import InfluxServer, around_the_outage, own, sink_pipeline, through_an_outage

pytestmark = pytest.mark.servers

USER, PASSWORD = INFLUX_ADMIN


def points(influx: InfluxServer, database: str, measurement: str, rp: str | None = None) -> list[dict[str, Any]]:
    """The measurement's points: [] while it does not exist yet (no series), or its database (the sink
    creates it with its first write); any other query error fails, never reads as no points."""
    try:
        return influx.points(database, measurement, rp)
    except AssertionError as exc:
        if f"database not found: {database}" in str(exc):
            return []
        raise


def test_values_tags_and_timestamps_read_back(influx: InfluxServer, tmp_path: Path) -> None:
    password_file = tmp_path / "influx-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    pipeline = sink_pipeline("influxdb", {"url": influx.url, "database": "metrics", "username": USER,
                                          "password_file": str(password_file), "create_database": True})
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send("i.req:3|c|#route:/login,env:prod\ni.req:3|c|#route:/login,env:prod\n"
                      "i.lat:10|ms\ni.lat:30|ms\ni.users:alice|s\ni.users:bob|s\ni.users:alice|s",
                      pipeline.statsd_port)
        # JSON input takes any tag value: a space, a comma and an equals sign test the escaping.
        pipeline.send(json.dumps({"metric_name": "i.temp", "metric_type": "gauge", "value": 21.5,
                                  "room": "a b,c=d", "floor": ""}))
        pipeline.send(json.dumps({"metric_name": "i.trace", "metric_type": "trace", "stage": "init"}))
        wait_for(lambda: all(points(influx, "metrics", m) for m in ("i.req", "i.lat", "i.users", "i.temp",
                                                                     "i.trace")), 15, "every measurement",
                 every=0.5)
    finally:
        pipeline.stop()
    flushed = {a["name"]: a for a in own(pipeline.aggregates()) if a["name"] != "i.temp" or a["tags"]}
    pipeline.cleanup()

    (req,) = points(influx, "metrics", "i.req")
    assert req == {"time": flushed["i.req"]["timestamp"], "env": "prod", "route": "/login", "value": 6.0, "rate": 6.0}
    (lat,) = points(influx, "metrics", "i.lat")
    assert lat.pop("time") == flushed["i.lat"]["timestamp"]
    assert lat == flushed["i.lat"]["stats"]
    assert (lat["count"], lat["sum"], lat["min"], lat["max"], lat["p90"]) == (2.0, 40.0, 10.0, 30.0, 30.0)
    (users,) = points(influx, "metrics", "i.users")
    assert (users["time"], users["value"]) == (flushed["i.users"]["timestamp"], 2.0)
    # The gauge is sent every interval until it expires: each point holds its value and both tags.
    temps = points(influx, "metrics", "i.temp")
    assert temps and all(p["value"] == 21.5 and p["room"] == "a b,c=d" for p in temps)
    assert "floor" not in temps[0]  # InfluxDB has no empty tag values: left out
    (trace,) = points(influx, "metrics", "i.trace")
    assert (trace["stage"], trace["value"]) == ("init", 1.0)


def test_retention_policy_precision_and_password_from_the_environment(influx: InfluxServer) -> None:
    influx.query('CREATE DATABASE "rp_test"')
    influx.query('CREATE RETENTION POLICY "short" ON "rp_test" DURATION 1h REPLICATION 1')
    pipeline = sink_pipeline("influxdb", {"url": influx.url + "/", "database": "rp_test", "retention_policy": "short",
                                          "precision": "s", "username": USER, "password_env": "TEST_INFLUX_PASSWORD"})
    pipeline.env["TEST_INFLUX_PASSWORD"] = PASSWORD
    try:
        pipeline.start()
        pipeline.send("r.c:5|c|#k:v", pipeline.statsd_port)
        wait_for(lambda: points(influx, "rp_test", "r.c", rp="short"), 15, "the point in rp_test.short", every=0.5)
    finally:
        pipeline.stop()
    (flushed,) = [a for a in pipeline.aggregates() if a["name"] == "r.c"]
    pipeline.cleanup()
    (point,) = points(influx, "rp_test", "r.c", rp="short")
    assert point == {"time": flushed["timestamp"], "k": "v", "value": 5.0, "rate": 5.0}
    # Not in the default retention policy: the query answers with no series (an error would raise).
    assert influx.points("rp_test", "r.c") == []


def test_a_stopped_server_loses_nothing_and_holds_up_no_other_sink(influx: InfluxServer) -> None:
    pipeline = sink_pipeline("influxdb", {"url": influx.url, "database": "outage", "username": USER,
                                          "password": PASSWORD, "create_database": True})
    try:
        pipeline.start()
        during = through_an_outage(pipeline, influx, lambda: len(points(influx, "outage", "o.c")))
    finally:
        pipeline.stop()
    flushed = pipeline.series("o.c")
    gauges = pipeline.series("o.g")
    log = pipeline.log("forwarder")
    dropped = [a for a in pipeline.series("pystatsd.forwarder.dropped") if a["tags"].get("sink") == "influxdb"]
    pipeline.cleanup()

    assert len(during) >= 3, "the file sink kept writing while InfluxDB was away"
    assert "Sink influxdb cannot deliver" in log, log
    stored = {p["time"]: p["value"] for p in points(influx, "outage", "o.c")}
    assert stored == {a["timestamp"]: a["value"] for a in flushed}
    assert len(stored) >= around_the_outage(during)
    assert {p["time"]: p["value"] for p in points(influx, "outage", "o.g")} == {
        a["timestamp"]: a["value"] for a in gauges}
    assert not dropped



def test_a_reload_that_adds_influxdb_and_removes_the_file_sink_loses_and_repeats_nothing(
        influx: InfluxServer) -> None:
    pipeline = Pipeline(flush_interval=1.0)
    load = {key: f"rl.c:1|c|#key:{key}\nrl.t:{i}|ms|#key:{key}" for i, key in enumerate("abcd")}
    with pipeline:
        with SteadyTraffic(pipeline.statsd_port, load, every_secs=0.005, max_secs=60) as traffic:
            time.sleep(2.5)
            pipeline.config["forwarders"] = {"influxdb": {"url": influx.url, "database": "reload", "username": USER,
                                                          "password": PASSWORD, "create_database": True}}
            pipeline.save_config()
            result = subprocess.run([VENV_BIN / "pystatsd", "reload", "--run-dir", str(pipeline.run_dir)],
                                    capture_output=True, text=True, timeout=60, env=pipeline.env)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "forwarders.file: (a sink) -> (not set)" in result.stdout
            assert "forwarders.influxdb: (not set) -> (a sink)" in result.stdout
            assert PASSWORD not in result.stdout + result.stderr
            time.sleep(2.5)
        sent = dict(traffic.sent)
        time.sleep(pipeline.flush_interval + 1.0)
        from_file = [(a["tags"]["key"], a["timestamp"], a["value"] if a["name"] == "rl.c" else a["stats"]["count"],
                      a["name"]) for a in pipeline.aggregates() if a["name"] in ("rl.c", "rl.t")]
    from_influx = [(p["key"], p["time"], p["value"], "rl.c") for p in points(influx, "reload", "rl.c")]
    from_influx += [(p["key"], p["time"], p["count"], "rl.t") for p in points(influx, "reload", "rl.t")]
    assert from_file and from_influx
    both = from_file + from_influx
    # Every interval of every series in exactly one of the two sinks, and together all that was sent.
    assert len({(key, ts, name) for key, ts, _, name in both}) == len(both)
    for name in ("rl.c", "rl.t"):
        assert {key: sum(n for k, _, n, m in both if k == key and m == name) for key in sent} == sent


def test_a_reload_that_fixes_influxdbs_url_delivers_what_the_wrong_one_held_exactly_once(
        influx: InfluxServer) -> None:
    settings = {"url": f"http://127.0.0.1:{free_port()}", "database": "fixed", "username": USER,
                "password": PASSWORD, "create_database": True}  # a typo in the port: nothing listens there
    # No self-metrics: what waits for InfluxDB is then exactly the user's aggregates.
    pipeline = sink_pipeline("influxdb", settings, self_metrics_prefix="")
    with pipeline:
        pipeline.wait_interval_start()
        pipeline.send("fx.a:1|c\nfx.b:2|c\nfx.c:5|c", pipeline.statsd_port)
        wait_for(lambda: all(pipeline.series(m) for m in ("fx.a", "fx.b", "fx.c")), 20, "the 3 aggregates flushed")
        # Everything the file sink has waits for InfluxDB.
        held = wait_for(lambda: pipeline.sink_figures().get("influxdb", {}).get("waiting") == (
            n := len(pipeline.aggregates())) and n, 20, "the aggregates waiting for InfluxDB at the wrong URL")
        pipeline.config["forwarders"]["influxdb"]["url"] = influx.url
        pipeline.save_config()
        reloaded = pipeline.pystatsd("reload")
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        pipeline.wait_interval_start()
        pipeline.send("fx.after:7|c", pipeline.statsd_port)
        measurements = ("fx.a", "fx.b", "fx.c", "fx.after")
        wait_for(lambda: all(points(influx, "fixed", m) for m in measurements), 20,
                 "what the wrong URL held, and what came after, in InfluxDB", every=0.5)
        row = wait_for(lambda: (row := pipeline.sink_figures()["influxdb"])["delivered"] >= held + 1 and row, 10,
                       f"the influxdb row to count the {held + 1} aggregates delivered")
        assert (row["delivered"], row["waiting"], row["dropped"], row["failing"]) == (held + 1, 0, {}, None), row
        flushed = {a["name"]: a for a in own(pipeline.aggregates())}
    # Each aggregate once, with the value and interval the file sink has for it.
    stored = {m: [(p["time"], p["value"]) for p in points(influx, "fixed", m)] for m in measurements}
    assert stored == {m: [(flushed[m]["timestamp"], flushed[m]["value"])] for m in measurements}
    assert [flushed[m]["value"] for m in measurements] == [1, 2, 5, 7]
