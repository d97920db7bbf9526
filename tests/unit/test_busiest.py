"""A shard's busiest names from its closed interval's per-series metric counts: the daemon's own metrics left
out, the folded series per name, a tag's values only when asked for. (How each type is counted:
tests/unit/test_bucket.py.)"""

from __future__ import annotations

from stages.aggregator.busiest import busiest
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.common.model import series_key


def test_names_rates_series_and_tag_values() -> None:
    bucket = IntervalBucket(SeriesLimit(10, ()), compiled=False)
    bucket.series_metrics = {series_key("hits", ("region", "eu")): 30, series_key("hits", ("region", "us")): 10,
                             series_key("latency", ("region", "eu")): 8, series_key("users", ()): 2,
                             series_key("load", ("region", "us")): 1, "pystatsd.receiver.metrics": 5000}
    figures = busiest(bucket, {"hits": 3}, 2.0, 10, ["region"], own_prefix="pystatsd.")
    assert [(n["name"], n["rate"], n["series"], n["folded"]) for n in figures["names"]] == [
        ("hits", 20.0, 2, 3), ("latency", 4.0, 1, 0), ("users", 1.0, 1, 0), ("load", 0.5, 1, 0)]
    assert figures["tags"] == {"region": [{"value": "eu", "rate": 19.0, "series": 2},
                                          {"value": "us", "rate": 5.5, "series": 2}]}
    assert busiest(bucket, {}, 2.0, 10, [])["tags"] == {}
