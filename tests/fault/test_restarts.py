"""Planned restarts under steady traffic: exact totals, and no series twice for one interval.

A restart must not show in what users store: a consumer that keeps the last point per series and
timestamp (InfluxDB) or drops re-sent ids must see the same as if nothing had been restarted.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.traffic import SteadyTraffic
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.fault

#: Series of both kinds on both shards: a counter and a timer per key, each with a tag.
KEYS = [f"k{i}" for i in range(8)]
LOAD = {key: f"rs.c:1|c|#key:{key}\nrs.t:{i}|ms|#key:{key},unit:ms" for i, key in enumerate(KEYS)}


def traffic(pipeline: Pipeline) -> SteadyTraffic[str]:
    return SteadyTraffic(pipeline.statsd_port, LOAD, every_secs=0.004, max_secs=120)


def sleep_until_phase(interval: float, phase: float) -> None:
    """Until ``phase`` (0..1) of the next interval."""
    now = time.time()
    time.sleep((now // interval + 1 + phase) * interval - now)


def records(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [a for a in pipeline.aggregates() if a["name"] in ("rs.c", "rs.t")]


def settled(check: Callable[[], bool], timeout: float) -> None:
    """Wait up to ``timeout`` for ``check``; the assertion after it says what differs if it never held."""
    with contextlib.suppress(WaitTimeout):
        wait_for(check, timeout, "the aggregates to settle")


def twice(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(name, tags, timestamp) that came more than once."""
    seen = collections.Counter((a["name"], tuple(sorted(a["tags"].items())), a["timestamp"]) for a in found)
    return [key for key, n in seen.items() if n > 1]


def per_key(found: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    counters: dict[str, float] = collections.Counter()
    timers: dict[str, float] = collections.Counter()
    for a in found:
        if a["name"] == "rs.c":
            counters[a["tags"]["key"]] += a["value"]
        else:
            timers[a["tags"]["key"]] += a["stats"]["count"]
    return counters, timers


def test_every_shard_restarted_at_the_start_middle_and_end_of_an_interval() -> None:
    with Pipeline(flush_interval=2.0) as pipeline:
        with traffic(pipeline) as load:
            for phase in (0.02, 0.5, 0.93):
                for shard in (0, 1):
                    sleep_until_phase(pipeline.flush_interval, phase)
                    pipeline.ctl("restart", f"aggregator:aggregator-{shard}", check=True)
            wait_for(pipeline.all_running, 20, "every stage RUNNING again")
            time.sleep(1.0)
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        assert per_key(records(pipeline)) == (sent, sent)
        assert twice(records(pipeline)) == []
        for shard in (0, 1):
            log = pipeline.log(f"aggregator-{shard}")
            assert log.count("Handed ") == 3 and log.count("Took over from the last instance") == 3, log
