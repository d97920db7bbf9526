"""The graphite sink against a real carbon-cache: values read back from whisper files, both tag styles, an outage."""

from __future__ import annotations

import functools
import time

import pytest

from harness.traffic import SteadyTraffic
from harness.wait import wait_for
from tests.sinks.servers import OUTAGE_LOAD, CarbonServer, around_the_outage, own, sink_pipeline

pytestmark = pytest.mark.servers

TIMER_STATS = ("count", "sum", "min", "max", "mean", "median", "stddev", "p50", "p90", "p95", "p99")
CORPUS = ("{p}.req:3|c|#route:/login,env:prod\n{p}.req:3|c|#route:/login,env:prod\n{p}.lat:10|ms\n{p}.lat:30|ms\n"
          "{p}.temp:21.5|g\n{p}.users:alice|s\n{p}.users:bob|s")


def test_graphite_tags_and_statsd_naming(carbon: CarbonServer) -> None:
    pipeline = sink_pipeline("graphite", {"host": "127.0.0.1", "port": carbon.line_port},
                             self_metrics_prefix="")
    expected_paths = ["g.req.count;env=prod;route=/login", "g.req.rate;env=prod;route=/login", "g.temp",
                      "g.users.count", *(f"g.lat.{stat}" for stat in TIMER_STATS)]
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send(CORPUS.format(p="g"), pipeline.statsd_port)
        wait_for(lambda: all(carbon.points(*expected_paths).values()), 15, "every path in whisper", every=0.5)
    finally:
        pipeline.stop()
    flushed = {a["name"]: a for a in own(pipeline.aggregates())}
    pipeline.cleanup()
    # Read once carbon has written the last (partial) interval the stop delivered too.
    time.sleep(1.5)
    stored = carbon.points(*expected_paths)

    stamp = flushed["g.req"]["timestamp"]
    assert stored["g.req.count;env=prod;route=/login"] == {stamp: 6.0}
    assert stored["g.req.rate;env=prod;route=/login"] == {stamp: 6.0}
    assert stored["g.users.count"] == {flushed["g.users"]["timestamp"]: 2.0}
    lat = flushed["g.lat"]
    assert {stat: stored[f"g.lat.{stat}"] for stat in TIMER_STATS} == {
        stat: {lat["timestamp"]: value} for stat, value in lat["stats"].items()}
    assert stored["g.temp"] and set(stored["g.temp"].values()) == {21.5}


def test_tags_folded_into_the_path_under_a_prefix(carbon: CarbonServer) -> None:
    pipeline = sink_pipeline("graphite", {"port": carbon.line_port, "prefix": "stats", "tag_style": "path"},
                             self_metrics_prefix="")
    expected_paths = {"stats.f.req.env.prod.route._login.count", "stats.f.req.env.prod.route._login.rate",
                      "stats.f.temp", "stats.f.users.count", *(f"stats.f.lat.{stat}" for stat in TIMER_STATS)}
    try:
        pipeline.start()
        pipeline.wait_interval_start()
        pipeline.send(CORPUS.format(p="f"), pipeline.statsd_port)
        wait_for(lambda: expected_paths <= set(carbon.stored_metrics()), 15, "every path in whisper", every=0.5)
    finally:
        pipeline.stop()
    flushed = {a["name"]: a for a in own(pipeline.aggregates())}
    pipeline.cleanup()
    time.sleep(1.5)

    assert {m for m in carbon.stored_metrics() if m.startswith("stats.")} == expected_paths
    stored = carbon.points("stats.f.req.env.prod.route._login.count", "stats.f.lat.p90")
    assert stored["stats.f.req.env.prod.route._login.count"] == {flushed["f.req"]["timestamp"]: 6.0}
    assert stored["stats.f.lat.p90"] == {flushed["f.lat"]["timestamp"]: 30.0}


def test_a_stopped_server_loses_nothing(carbon: CarbonServer) -> None:
    """Carbon is stopped under steady traffic and started again; every interval ends up in whisper.

    carbon-cache 1.1.7 throws away the points it holds in memory when it stops (those of its last
    second), whoever sent them. So the test stops it once it has written the interval just flushed,
    well before the next: what is tested is the sink's part, that nothing sent while carbon is away
    or going away is lost.
    """
    interval = 3.0
    pipeline = sink_pipeline("graphite", {"port": carbon.line_port, "tag_style": "path"},
                             flush_interval=interval, self_metrics_prefix="")
    paths = {"o.c": "o.c.run.outage.count", "o.g": "o.g"}

    def written(stamp: int) -> bool:
        return all(stamp in points for points in carbon.points(*paths.values()).values())

    try:
        pipeline.start()
        with SteadyTraffic(pipeline.statsd_port, OUTAGE_LOAD, every_secs=0.05, max_secs=60):
            wait_for(lambda: pipeline.series("o.c"), 10, "the first interval")
            for _ in range(5):
                # Just after the next interval edge, wait for the interval that ended there to be in whisper.
                edge = (time.time() // interval + 1) * interval
                time.sleep(edge - time.time() + 0.1 * interval)
                wait_for(functools.partial(written, int(edge)), interval, "carbon to write the last interval",
                         every=0.1)
                if time.time() - edge < 0.7 * interval:
                    break
            else:
                pytest.fail("found no moment to stop carbon between two flushes")
            carbon.stop()
            stopped = time.time()
            time.sleep(2.5 * interval)
            during = [a for a in pipeline.series("o.c") if a["timestamp"] > stopped]
            carbon.start()
            wait_for(lambda: len(carbon.points(paths["o.c"])[paths["o.c"]]) >= len(pipeline.series("o.c")) - 1, 20,
                     "the buffered intervals to reach whisper", every=0.5)
    finally:
        pipeline.stop()
    flushed = {name: {a["timestamp"]: a["value"] for a in pipeline.series(name)} for name in paths}
    log = pipeline.log("forwarder")
    pipeline.cleanup()

    assert len(during) >= 2, "the file sink kept writing while carbon was away"
    assert "Sink graphite cannot deliver" in log, log
    wait_for(lambda: {name: carbon.points(path)[path] for name, path in paths.items()} == flushed, 5,
             "whisper to hold exactly what was flushed", every=0.5)
    assert len(flushed["o.c"]) >= around_the_outage(during)
