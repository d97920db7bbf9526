"""A tag explosion on one name: memory stays bounded and the name's total stays exact."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.flood import peak_rss_per_process, send_distinct
from harness.pipeline import Pipeline, total
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.fault

VALUES = 1_000_000
RATE_PER_SEC = 100_000
#: The bound docs/guarantees.md states for every process under a tag explosion.
RSS_LIMIT_KIB = 150 * 1024


def test_a_million_distinct_tag_values_fold_into_the_overflow_series() -> None:
    pipeline = Pipeline({"series_limit_per_name": 1000})
    try:
        pipeline.start()
        send_distinct(pipeline, lambda i: f"card.c:1|c|#user:{i}", VALUES, RATE_PER_SEC)
        pipeline.send("card.other:1|c", pipeline.statsd_port)
        try:
            # A million series through one name: allow a loaded machine time to work off its backlog.
            wait_for(lambda: total(pipeline.series("card.c")) == VALUES, 60, "every increment of card.c")
        except WaitTimeout:
            raise AssertionError(f"card.c totals {total(pipeline.series('card.c'))} of {VALUES}; counted losses: "
                                 f"{pipeline.counted_losses()}") from None
        overflow = pipeline.series("card.c", pystatsd_overflow="true")
        # At most the limit's 1000 series of the name in each interval, the rest folded into its overflow
        # series (an interval the flood only began in may hold fewer, and no overflow series).
        kept = Counter(a["timestamp"] for a in pipeline.series("card.c") if a not in overflow)
        assert overflow and max(kept.values()) <= 1000
        assert total(pipeline.series("card.other")) == 1
        folded = total(pipeline.series("pystatsd.aggregator.overflow_series", metric="card.c"))
        assert folded == VALUES - len(pipeline.series("card.c")) + len(overflow)
        rss = peak_rss_per_process(pipeline)
        assert all(kib < RSS_LIMIT_KIB for kib in rss.values()), rss
    finally:
        pipeline.stop()
        pipeline.cleanup()
