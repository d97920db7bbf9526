"""A tag explosion on one name: memory stays bounded and the name's total stays exact."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.pipeline import Pipeline, total
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.fault

VALUES = 1_000_000
RATE_PER_SEC = 100_000
#: Lines per datagram, as a buffering client sends them: the test is of a million series, not of a
#: million datagrams, whose per-datagram cost on a slow shared CI core overflowed the socket's queue.
LINES_PER_DATAGRAM = 25
#: The bound the README states for every process under a tag explosion.
RSS_LIMIT_KIB = 150 * 1024


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_million_distinct_tag_values_fold_into_the_overflow_series() -> None:
    pipeline = Pipeline({"series_limit_per_name": 1000})
    try:
        pipeline.start()
        started = time.monotonic()
        for first in range(0, VALUES, LINES_PER_DATAGRAM):
            lines = (f"card.c:1|c|#user:{i}" for i in range(first, min(first + LINES_PER_DATAGRAM, VALUES)))
            pipeline.send("\n".join(lines), pipeline.statsd_port)
            if first % 1000 == 0:
                ahead = started + first / RATE_PER_SEC - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        pipeline.send("card.other:1|c", pipeline.statsd_port)
        try:
            # A million series through one name: allow a loaded machine time to work off its backlog.
            wait_for(lambda: total(pipeline.series("card.c")) == VALUES, 60, "every increment of card.c")
        except WaitTimeout:
            raise AssertionError(f"card.c totals {total(pipeline.series('card.c'))} of {VALUES}; counted losses: "
                                 f"{pipeline.counted_losses()}") from None
        overflow = pipeline.series("card.c", pystatsd_overflow="true")
        assert overflow and total(overflow) >= VALUES - 1000 * len({a["timestamp"] for a in overflow})
        assert total(pipeline.series("card.other")) == 1
        folded = total(pipeline.series("pystatsd.aggregator.overflow_series", metric="card.c"))
        assert folded == VALUES - len(pipeline.series("card.c")) + len(overflow)
        rss = {name: peak_rss_kib(pid) for name, (_, pid) in pipeline.status().items() if pid}
        assert all(kib < RSS_LIMIT_KIB for kib in rss.values()), rss
    finally:
        pipeline.stop()
        pipeline.cleanup()
