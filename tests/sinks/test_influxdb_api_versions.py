"""The influxdb sink's ``api_version: 2`` against two real servers that take InfluxDB 2's ``/api/v2/write``
(InfluxDB 1.8.3, authentication on, and VictoriaMetrics), and ``api_version: 3`` against a test server
standing in for InfluxDB 3's ``/api/v3/write_lp``, which cannot be had here.

Each destination is read back and held to the file sink's record of what was flushed: values and
tags, every interval exactly once across the destination's restart, and across a ``pystatsd reload``
that moves the sink to another bucket or database.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from harness.ports import free_port
from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from tests.sinks.servers import (
    InfluxServer,
    VictoriaMetricsServer,
    around_the_outage,
    own,
    reply,
    settled,
    sink_pipeline,
    through_an_outage,
)
from tests.sinks.test_influxdb_sink import points as influx_points

pytestmark = pytest.mark.servers

#: InfluxDB 3's tokens start so; the stand-in takes this one only.
V3_TOKEN = "apiv3_test-token-5d0c"


class Destination:
    """A server the sink writes to, as the tests see it: its sink settings for a bucket or database
    (``target``), that target made ready, and every point of a measurement written to some targets."""

    name = ""

    def settings(self, target: str, tmp_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, target: str) -> None:
        """Make ``target`` writable: nothing, unless the server needs it made first."""

    def points(self, targets: list[str], measurement: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError


class Influx18(Destination):
    """InfluxDB 1.8.3's /api/v2/write: the bucket is ``database/retention-policy``, the org ignored, the token
    ``username:password``."""

    name = "influxdb-1.8"

    def __init__(self, server: InfluxServer) -> None:
        self.server = server

    def settings(self, target: str, tmp_path: Path) -> dict[str, Any]:
        token_file = tmp_path / "influx-token"
        token_file.write_text(f"{self.server.admin}:{self.server.password}\n")
        token_file.chmod(0o600)
        return {"api_version": 2, "url": self.server.url, "org": "-", "bucket": f"{target}/autogen",
                "token_file": str(token_file), "precision": "u"}

    def prepare(self, target: str) -> None:
        self.server.query(f'CREATE DATABASE "{target}"')  # its default retention policy is autogen

    def points(self, targets: list[str], measurement: str) -> list[dict[str, Any]]:
        return [p for target in targets for p in influx_points(self.server, target, measurement, "autogen")]

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


class Victoria(Destination):
    """VictoriaMetrics' /api/v2/write: it takes the org, the bucket and the token and ignores them (one
    store for every bucket), and keeps a point written twice twice."""

    name = "victoria-metrics"

    def __init__(self, server: VictoriaMetricsServer) -> None:
        self.server = server

    def settings(self, target: str, tmp_path: Path) -> dict[str, Any]:
        return {"api_version": 2, "url": self.server.url, "org": "pystatsd", "bucket": target, "token": "unused",
                "precision": "ms"}

    def points(self, targets: list[str], measurement: str) -> list[dict[str, Any]]:
        return self.server.points(measurement)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()


class InfluxDB3StandIn(Destination):
    """Stands for InfluxDB 3's /api/v3/write_lp, which no server here serves: it checks each request as
    InfluxDB 3 reads it (the path, ``db`` and ``precision`` and nothing else in the query, the bearer
    token, line protocol in the body, timestamps in the precision named) and keeps the lines of those
    that pass, per database; any other request is answered 400 or 401 and its problem kept."""

    name = "influxdb3-stand-in"
    #: The precisions every InfluxDB 3 release takes (the short names came later) → nanoseconds in one unit.
    PRECISIONS = {"nanosecond": 1, "microsecond": 1_000, "millisecond": 1_000_000, "second": 1_000_000_000}

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: dict[str, list[tuple[str, str]]] = {}  # database → (precision, line)
        self.problems: list[str] = []
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def settings(self, target: str, tmp_path: Path) -> dict[str, Any]:
        token_file = tmp_path / "influxdb3-token"
        token_file.write_text(V3_TOKEN + "\n")
        token_file.chmod(0o600)
        return {"api_version": 3, "url": self.url, "database": target, "token_file": str(token_file),
                "precision": "ms"}

    def check(self, path: str, headers: Any, body: bytes) -> tuple[int, str, str, list[str]]:
        """(status, problem, database and precision, lines) of one request."""
        parts = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        if parts.path != "/api/v3/write_lp":
            return 404, f"path {parts.path!r}", "", []
        if headers.get("Authorization") != f"Bearer {V3_TOKEN}":
            return 401, f"Authorization {headers.get('Authorization')!r}", "", []
        if set(query) != {"db", "precision"} or len(query["db"]) != 1 or not query["db"][0] \
                or len(query["precision"]) != 1 or query["precision"][0] not in self.PRECISIONS:
            return 400, f"query {query!r}", "", []
        if headers.get("Content-Type") != "text/plain; charset=utf-8":
            return 400, f"Content-Type {headers.get('Content-Type')!r}", "", []
        lines = body.decode().split("\n")
        for line in lines:
            fields = line.split(" ")
            # The sink stamps seconds: in the precision named, a whole number of seconds.
            if len(fields) != 3 or not fields[2].isdigit() \
                    or int(fields[2]) % (10**9 // self.PRECISIONS[query["precision"][0]]):
                return 400, f"line {line!r}", "", []
        return 204, "", f"{query['db'][0]} {query['precision'][0]}", lines

    def start(self) -> None:
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, problem, where, lines = stand_in.check(self.path, self.headers, body)
                with stand_in.lock:
                    if problem:
                        stand_in.problems.append(problem)
                    else:
                        database, precision = where.split(" ")
                        stand_in.lines.setdefault(database, []).extend((precision, line) for line in lines)
                reply(self, status, json.dumps({"error": problem}).encode() if problem else b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = self.thread = None

    def points(self, targets: list[str], measurement: str) -> list[dict[str, Any]]:
        """Each line of ``measurement`` in ``targets`` as InfluxServer.points has it (time in seconds)."""
        with self.lock:
            taken = [entry for target in targets for entry in self.lines.get(target, [])]
        found = []
        for precision, line in taken:
            head, fields, stamp = line.split(" ")
            name, *tags = head.split(",")
            if name == measurement:
                point: dict[str, Any] = {"time": int(stamp) // (10**9 // self.PRECISIONS[precision])}
                point |= dict(tag.split("=", 1) for tag in tags)
                point |= {k: float(v) for k, v in (field.split("=", 1) for field in fields.split(","))}
                found.append(point)
        return found


@pytest.fixture(params=["influxdb-1.8", "victoria-metrics", "influxdb3-stand-in"])
def destination(request: pytest.FixtureRequest) -> Any:
    if request.param == "influxdb-1.8":
        yield Influx18(request.getfixturevalue("influx_1_8"))
    elif request.param == "victoria-metrics":
        yield Victoria(request.getfixturevalue("victoria_metrics"))
    else:
        stand_in = InfluxDB3StandIn()
        stand_in.start()
        yield stand_in
        stand_in.stop()
        assert stand_in.problems == [], "requests the sink sent that InfluxDB 3 would not take"


def without_time(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != "time"}


def test_values_tags_and_timestamps_read_back(destination: Destination, tmp_path: Path) -> None:
    destination.prepare("values")
    pipeline = sink_pipeline("influxdb", destination.settings("values", tmp_path))
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send("v.req:3|c|#route:/login,env:prod\nv.req:3|c|#route:/login,env:prod\n"
                      "v.lat:10|ms\nv.lat:30|ms\nv.users:alice|s\nv.users:bob|s\nv.users:alice|s\nv.temp:21.5|g|#room:a",
                      pipeline.statsd_port)
        wait_for(lambda: all(destination.points(["values"], m) for m in ("v.req", "v.lat", "v.users", "v.temp")), 20,
                 "every measurement", every=0.5)
    finally:
        pipeline.stop()
    flushed = {a["name"]: a for a in own(pipeline.aggregates())}
    temps = [a for a in pipeline.aggregates() if a["name"] == "v.temp"]
    log = pipeline.log("forwarder")
    pipeline.cleanup()

    assert "cannot deliver" not in log, log
    # The gauge goes every interval until it expires, each once. The stop's final flush is the last
    # write: once it reads back, so does every earlier one.
    temp_times = [a["timestamp"] for a in temps]
    stored_times = settled(lambda: sorted(p["time"] for p in destination.points(["values"], "v.temp")), temp_times)
    assert stored_times == temp_times, f"the forwarder's log ends:\n{log[-3000:]}"
    (req,) = destination.points(["values"], "v.req")
    assert req == {"time": flushed["v.req"]["timestamp"], "env": "prod", "route": "/login", "value": 6.0, "rate": 6.0}
    (lat,) = destination.points(["values"], "v.lat")
    assert lat.pop("time") == flushed["v.lat"]["timestamp"]
    assert lat == flushed["v.lat"]["stats"]
    assert (lat["count"], lat["sum"], lat["min"], lat["max"]) == (2.0, 40.0, 10.0, 30.0)
    (users,) = destination.points(["values"], "v.users")
    assert users == {"time": flushed["v.users"]["timestamp"], "value": 2.0}
    assert all(without_time(p) == {"room": "a", "value": 21.5} for p in destination.points(["values"], "v.temp"))


def test_a_stopped_server_loses_nothing_and_writes_nothing_twice(destination: Destination, tmp_path: Path) -> None:
    destination.prepare("outage")
    pipeline = sink_pipeline("influxdb", destination.settings("outage", tmp_path))
    try:
        pipeline.start()
        during = through_an_outage(pipeline, destination, lambda: len(destination.points(["outage"], "o.c")))
    finally:
        pipeline.stop()
    flushed, gauges = pipeline.series("o.c"), pipeline.series("o.g")
    log = pipeline.log("forwarder")
    dropped = [a for a in pipeline.series("pystatsd.forwarder.dropped") if a["tags"].get("sink") == "influxdb"]
    pipeline.cleanup()

    assert len(during) >= 3, "the file sink kept writing while the destination was away"
    assert "Sink influxdb cannot deliver" in log, log
    # Lists, not sets: a point written twice (VictoriaMetrics keeps both) fails.
    expected = sorted((a["timestamp"], a["value"], a["tags"]["run"]) for a in flushed)
    stored = settled(lambda: sorted((p["time"], p["value"], p["run"]) for p in destination.points(["outage"], "o.c")),
                     expected)
    assert stored == expected
    assert len(stored) >= around_the_outage(during)
    expected_gauges = sorted((a["timestamp"], a["value"]) for a in gauges)
    assert settled(lambda: sorted((p["time"], p["value"]) for p in destination.points(["outage"], "o.g")),
                   expected_gauges) == expected_gauges
    assert not dropped


def test_a_reload_that_moves_the_sink_to_another_target_loses_and_repeats_nothing(
        destination: Destination, tmp_path: Path) -> None:
    for target in ("before", "after"):
        destination.prepare(target)
    settings = destination.settings("before", tmp_path)
    pipeline = sink_pipeline("influxdb", settings, self_metrics_prefix="")
    load = {key: f"rl.c:1|c|#key:{key}\nrl.t:{i}|ms|#key:{key}" for i, key in enumerate("abcd")}
    with pipeline:
        with SteadyTraffic(pipeline.statsd_port, load, every_secs=0.005, max_secs=60) as traffic:
            wait_for(lambda: destination.points(["before"], "rl.c"), 15, "the first points", every=0.5)
            time.sleep(1.0)
            pipeline.config["forwarders"]["influxdb"] = destination.settings("after", tmp_path)
            pipeline.save_config()
            reloaded = pipeline.pystatsd("reload")
            assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
            target_key = "bucket" if settings["api_version"] == 2 else "database"
            assert f"forwarders.influxdb.{target_key}:" in reloaded.stdout, reloaded.stdout
            assert V3_TOKEN not in reloaded.stdout + reloaded.stderr
            time.sleep(2.5)
        sent = dict(traffic.sent)
        time.sleep(pipeline.flush_interval + 1.0)
        flushed = [(a["name"], a["tags"]["key"], a["timestamp"],
                    a["value"] if a["name"] == "rl.c" else a["stats"]["count"])
                   for a in pipeline.aggregates() if a["name"] in ("rl.c", "rl.t")]
        # The file sink has every interval; the destination then has them all once the last arrived.
        wait_for(lambda: len(destination.points(["before", "after"], "rl.c")) >= sum(
            1 for f in flushed if f[0] == "rl.c"), 20, "every interval in the destination", every=0.5)
    stored = [("rl.c", p["key"], p["time"], p["value"]) for p in destination.points(["before", "after"], "rl.c")]
    stored += [("rl.t", p["key"], p["time"], p["count"]) for p in destination.points(["before", "after"], "rl.t")]
    # Every interval of every series once (a list: twice fails), and together all that was sent.
    assert sorted(stored) == sorted(flushed)
    for name in ("rl.c", "rl.t"):
        assert {key: sum(n for m, k, _, n in stored if k == key and m == name) for key in sent} == sent
    if not isinstance(destination, Victoria):  # it has one store for every bucket
        assert destination.points(["before"], "rl.c") and destination.points(["after"], "rl.c"), \
            "the reload moved the sink"
