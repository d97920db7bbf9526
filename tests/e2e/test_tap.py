"""``pystatsd tap`` against a real pipeline: it shows exactly the metrics sent that its glob, tags and count
ask for, the rule that decided each one at ``mapped``, the aggregates at ``flushed``; against a pipeline
that is not running it says so and exits 1; left running while the receiver restarts, it reconnects."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline, commands_without_a_pipeline
from harness.wait import wait_for

pytestmark = pytest.mark.e2e

RULES = [{"match": "api.*.latency", "name": "api.latency", "tags": {"endpoint": "$1"}},
         {"match": "debug.*", "drop": True}]


class Tap:
    """A ``pystatsd tap`` process; its stderr says when it listens to a stage process."""

    def __init__(self, pipeline: Pipeline, *args: str) -> None:
        self.process = subprocess.Popen(
            [VENV_BIN / "pystatsd", "tap", *args, "-c", str(pipeline.config_path), "--run-dir", str(pipeline.run_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pipeline.env)
        self.said: list[str] = []

    def wait_tapping(self, times: int = 1) -> None:
        """Until its stderr said ``times`` times that it taps a process (blocking reads: it says so at once)."""
        assert self.process.stderr is not None
        while sum("tapping" in line for line in self.said) < times:
            line = self.process.stderr.readline()
            assert line, f"the tap ended first: {''.join(self.said)}"
            self.said.append(line)

    def shown(self, timeout: float = 20) -> list[dict[str, Any]]:
        """Every line it printed, once it exited (its --count reached)."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@contextmanager
def tapping(pipeline: Pipeline, *args: str) -> Iterator[Tap]:
    tap = Tap(pipeline, *args)
    try:
        tap.wait_tapping()
        yield tap
    finally:
        tap.stop()


def test_a_tap_shows_exactly_the_metrics_sent_its_glob_and_tags_ask_for_up_to_its_count() -> None:
    with Pipeline(flush_interval=1.0) as pipeline, \
            tapping(pipeline, "--match", "web.*", "--tag", "env:prod", "--count", "3") as tap:
        # one payload the glob and tag pick three metrics from, among others that differ by name or tag
        pipeline.send("\n".join(["web.hits:1|c|#env:prod", "web.hits:2|c|#env:dev", "db.hits:4|c|#env:prod",
                                 "web.latency:12|ms|#env:prod,region:eu", "web.load:0.5|g|#env:prod",
                                 "web.other:1|c"]), pipeline.statsd_port)
        shown = tap.shown()
    assert [(m["where"], m["name"], m["type"], m["value"], m["tags"]) for m in shown] == [
        ("received", "web.hits", "counter", 1.0, {"env": "prod"}),
        ("received", "web.latency", "timer", 12.0, {"env": "prod", "region": "eu"}),
        ("received", "web.load", "gauge", 0.5, {"env": "prod"})]


def test_a_tap_sees_every_metric_of_a_burst_and_no_other() -> None:
    with Pipeline(flush_interval=1.0) as pipeline, tapping(pipeline, "--match", "burst.*", "--count", "40") as tap:
        for i in range(20):  # 20 datagrams of 2 lines each, plus one line each the glob leaves out
            pipeline.send(f"burst.a:{i}|c\nburst.b:{i}|g\nother.c:{i}|c", pipeline.statsd_port)
        shown = tap.shown()
    assert sorted((m["name"], m["value"]) for m in shown) == sorted(
        [("burst.a", float(i)) for i in range(20)] + [("burst.b", float(i)) for i in range(20)])


def test_mapped_shows_the_rule_that_decided_each_metric() -> None:
    with Pipeline(config={"rules": RULES}, flush_interval=1.0) as pipeline, \
            tapping(pipeline, "--where", "mapped", "--count", "3") as tap:
        pipeline.send("api.users.latency:12|ms\ndebug.x:1|c\nkept:1|c", pipeline.statsd_port)
        shown = tap.shown()
    assert [(m["received_name"], m["name"], m["tags"], m["rule"], m["outcome"]) for m in shown] == [
        ("api.users.latency", "api.latency", {"endpoint": "users"}, "rules[0]", "mapped"),
        ("debug.x", "debug.x", {}, "rules[1]", "dropped"),
        ("kept", "kept", {}, None, "unmatched")]


def test_flushed_shows_the_aggregates() -> None:
    with Pipeline(flush_interval=1.0) as pipeline, \
            tapping(pipeline, "--where", "flushed", "--match", "flush.*", "--count", "2") as tap:
        pipeline.wait_interval_start()
        pipeline.send("flush.hits:1|c\nflush.hits:2|c\nflush.latency:10|ms\nflush.latency:30|ms",
                      pipeline.statsd_port)
        shown = tap.shown()
    by_name = {m["name"]: m for m in shown}
    assert by_name["flush.hits"]["value"] == 3.0
    assert by_name["flush.hits"]["where"] == "flushed"
    assert (by_name["flush.latency"]["stats"]["count"], by_name["flush.latency"]["stats"]["sum"]) == (2.0, 40.0)


def test_a_tap_of_a_pipeline_that_is_not_running_says_so_and_exits_1() -> None:
    [done] = commands_without_a_pipeline(("tap", "--count", "1"))
    assert done.returncode == 1
    assert "no receiver is running" in done.stderr


def test_bad_options_are_refused_naming_the_option() -> None:
    rate, count, tag = commands_without_a_pipeline(("tap", "--rate", "fast"), ("tap", "--count", "0"),
                                                   ("tap", "--tag", ":v"))
    assert (rate.returncode, count.returncode, tag.returncode) == (78, 78, 78)
    assert "--rate: 'fast'" in rate.stderr
    assert "--count: at least 1" in count.stderr
    assert "--tag: ':v' has no key" in tag.stderr


def test_a_tap_left_running_while_the_receiver_restarts_reconnects() -> None:
    with Pipeline(flush_interval=1.0) as pipeline, tapping(pipeline, "--match", "after.*", "--count", "1") as tap:
        pipeline.ctl("stop", "receiver", check=True)
        pipeline.ctl("start", "receiver", check=True)
        wait_for(pipeline.all_running, 15, "the receiver to run again")
        tap.wait_tapping(times=2)
        deadline = time.monotonic() + 15
        # The second subscription reaches the new receiver within a burst or two: send until it shows one.
        while tap.process.poll() is None and time.monotonic() < deadline:
            pipeline.send("after.restart:1|c", pipeline.statsd_port)
            with suppress(subprocess.TimeoutExpired):
                tap.process.wait(timeout=0.1)
        shown = tap.shown()
    assert [(m["name"], m["value"]) for m in shown] == [("after.restart", 1.0)]
    assert any("receiver went away" in line for line in tap.said)
