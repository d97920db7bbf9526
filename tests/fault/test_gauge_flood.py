"""A flood of distinct gauges: each shard keeps at most gauges_limit of them (the rest dropped and
counted), every process stays under docs/guarantees.md's memory bound, and a flush that overran is reported."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from harness.flood import peak_rss_per_process, send_distinct
from harness.pipeline import Pipeline
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.fault

GAUGES = 500_000
RATE_PER_SEC = 25_000
SHARDS = 2
#: The default gauges_limit: docs/guarantees.md's figure is for the config as shipped.
GAUGES_LIMIT = 100_000
#: The bound docs/guarantees.md states for every process under a gauge flood.
RSS_LIMIT_KIB = 150 * 1024
PREFIX = "flood.g"
OVERRUN_LINE = "overran its interval"


class FileTally:
    """What the file sink wrote so far, read on from where the last look stopped (it grows by 200,000
    lines an interval): the flood's gauges by value, and the shards' self-metrics of the flood."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        #: flood gauge index → every value it was reported with
        self.values: dict[int, set[float]] = {}
        self.dropped = 0.0
        self.overruns = 0.0

    def read(self) -> FileTally:
        if not self.path.exists():
            return self
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        for line in whole.splitlines():
            aggregate = orjson.loads(line)
            name = aggregate["name"]
            if name.startswith(PREFIX):
                self.values.setdefault(int(name[len(PREFIX):]), set()).add(aggregate["value"])
            elif name == "pystatsd.aggregator.dropped_gauges":
                self.dropped += aggregate["value"]
            elif name == "pystatsd.aggregator.flush_overruns":
                self.overruns += aggregate["value"]
        return self

    def accounted(self) -> bool:
        return len(self.values) + self.dropped == GAUGES


def test_a_flood_of_distinct_gauges_is_bounded_per_shard_and_counted() -> None:
    # The file sink syncs 22 MB an interval to a disk shared with other tests: its buffer holds a
    # backlog of whole intervals rather than drop one (and with it a shard's count of dropped gauges).
    pipeline = Pipeline(shards=SHARDS, flush_interval=2.0)
    pipeline.config["forwarders"]["file"]["buffer_max_aggregates"] = 4_000_000
    pipeline.save_config()
    tally = FileTally(pipeline.out_path)
    try:
        pipeline.start()
        send_distinct(pipeline, lambda i: f"{PREFIX}{i}:{i}|g", GAUGES, RATE_PER_SEC)
        try:
            wait_for(lambda: tally.read().accounted(), 30, "every gauge delivered or counted as dropped", every=1.0)
        except WaitTimeout:
            raise AssertionError(f"{len(tally.values)} gauges delivered and {tally.dropped} counted dropped of "
                                 f"{GAUGES}; counted losses: {pipeline.counted_losses()}") from None
        # delivered + counted = sent, each delivered gauge with the one value sent, each shard full.
        assert len(tally.values) == SHARDS * GAUGES_LIMIT
        assert all(values == {float(i)} for i, values in tally.values.items())
        for shard in range(SHARDS):
            assert "gauges_limit (100000) reached: dropped" in pipeline.log(f"aggregator-{shard}")
        rss = peak_rss_per_process(pipeline)
        assert all(kib < RSS_LIMIT_KIB for kib in rss.values()), rss
        # Overruns are reported in the interval after theirs: stop first, so every report is in the file.
        pipeline.stop()
        logged = sum(pipeline.log(f"aggregator-{shard}").count(OVERRUN_LINE) for shard in range(SHARDS))
        assert tally.read().overruns == logged
    finally:
        if (pipeline.run_dir / "supervisord.pid").exists():
            pipeline.stop()
        pipeline.cleanup()
