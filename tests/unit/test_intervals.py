"""The one rule for interval edges (stages.common.intervals): a published start maps back to its own interval."""

from __future__ import annotations

import pytest

from stages.common.intervals import interval_index, interval_start, next_edge

NOW = 1_700_000_000.0


@pytest.mark.parametrize("interval", [0.1, 0.2, 0.3, 0.25, 1.0, 1.5, 10.0, 60.0])
def test_every_published_start_falls_in_its_own_interval(interval: float) -> None:
    first = interval_index(NOW, interval)
    for index in range(first, first + 2000):
        start = interval_start(index, interval)
        # 1700000000.3 / 0.1 is 17000000002.999998: a plain floor (the shard's) and the fleet's + 1e-9
        # both put this start in the interval before.
        assert interval_index(start, interval) == index
        assert interval_index(start - 1e-5, interval) == index - 1
        assert next_edge(start, interval) == interval_start(index + 1, interval)


@pytest.mark.parametrize(("now", "interval", "edge"), [
    (NOW, 10.0, NOW + 10), (NOW + 9.999, 10.0, NOW + 10), (NOW + 0.05, 0.1, NOW + 0.1),
    (NOW + 0.3, 0.1, NOW + 0.4), (NOW + 0.29999, 0.1, NOW + 0.3), (0.0, 10.0, 10.0),
])
def test_the_next_edge_is_the_start_of_the_next_interval(now: float, interval: float, edge: float) -> None:
    assert next_edge(now, interval) == round(edge, 6)
    assert next_edge(now, interval) > now
