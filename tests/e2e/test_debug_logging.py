"""``PYSTATSD_LOG_LEVEL=DEBUG``: each stage says what it does with every batch and every flush."""

from __future__ import annotations

import re

import pytest

from harness.pipeline import Pipeline
from harness.wait import wait_for
from stages.common.sharding import shard_for

pytestmark = pytest.mark.e2e

NAME = "debug.hits"


def test_each_stage_logs_each_batch_and_flush_at_debug_level() -> None:
    pipeline = Pipeline()
    pipeline.env["PYSTATSD_LOG_LEVEL"] = "DEBUG"
    shard = shard_for(NAME, pipeline.shards)
    expected = {
        "receiver": rf"receiver DEBUG stages\.receiver\.batcher: Sent a batch to shard {shard}: \d+ entries, "
                    rf"\d+ metrics, seq \d+",
        f"aggregator-{shard}": [
            r"DEBUG stages\.aggregator: Merged a batch from receiver: seq \d+, \d+ metrics",
            r"DEBUG stages\.aggregator: Flushed the interval from [\d.]+ \([\d.]+ s\): \d+ aggregates, seq \d+, "
            r"built in [\d.]+ ms"],
        "forwarder": [rf"DEBUG stages\.forwarder: Took flush \d+ of shard {shard}: \d+ aggregates, handed to 1 sinks",
                      r"DEBUG stages\.forwarder: Own metrics: \d+ aggregates handed to 1 sinks"],
    }
    with pipeline:
        pipeline.send(f"{NAME}:1|c", pipeline.statsd_port)
        pipeline.wait_series(NAME, settle=False)
        for program, patterns in expected.items():
            for pattern in [patterns] if isinstance(patterns, str) else patterns:
                wait_for(lambda: re.search(pattern, pipeline.log(program)), 10,  # noqa: B023 - called at once
                         f"{program} to log /{pattern}/")


def test_at_info_level_the_stages_say_nothing_per_batch() -> None:
    with Pipeline() as pipeline:
        pipeline.send(f"{NAME}:1|c", pipeline.statsd_port)
        stamp = pipeline.wait_series(NAME, settle=False)[0]["timestamp"]
        # Every stage has handled the batch and the flush, and one more interval (stragglers).
        wait_for(lambda: pipeline.shards_flushed_after(stamp), 10, "every shard to flush the next interval")
        for program in ("receiver", "aggregator-0", "aggregator-1", "forwarder"):
            log = pipeline.log(program)
            # A missing or empty log holds no DEBUG line either: the stage must have logged at INFO.
            assert " INFO " in log, f"{program} logged nothing at INFO level: {log!r}"
            assert " DEBUG " not in log
