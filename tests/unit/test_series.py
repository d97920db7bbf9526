"""IntervalBucket and Gauges: what one interval's samples add up to, and how long a gauge lives."""

from __future__ import annotations

from stages.aggregator.series import Gauges, IntervalBucket, SeriesLimit
from stages.common.model import MetricType, series_key, split_series_key
from tests.unit.bodies import bodies_of

C, G, GD, T, S, TR = (int(MetricType.COUNTER), int(MetricType.GAUGE), int(MetricType.GAUGE_DELTA),
                      int(MetricType.TIMER), int(MetricType.SET), int(MetricType.TRACE))
ENV = ("env", "prod")
OVERFLOW = ("pystatsd_overflow", "true")


def unlimited() -> SeriesLimit:
    return SeriesLimit(10_000, OVERFLOW)


def bucket_with(*samples: tuple, limit: SeriesLimit | None = None) -> IntervalBucket:
    bucket = IntervalBucket(limit or unlimited(), compiled=False)
    for body in bodies_of(list(samples)):
        bucket.merge(body)
    return bucket


def gauge_after(*intervals: list[tuple]) -> dict:
    """Gauge values after applying each list of samples as one interval (indexes 0, 1, ...)."""
    gauges = Gauges(expire_after=30, limit=unlimited())
    for index, samples in enumerate(intervals):
        gauges.apply(bucket_with(*samples).gauge_changes, index)
    return {split_series_key(key): value for key, (value, _) in gauges.values.items()}


def test_counter_under_sample_rate_counts_value_over_rate() -> None:
    # 3 at @0.5 stands for 6; plus 1 at full rate = 7 over a 10 s interval -> rate 0.7/s.
    bucket = bucket_with(("hits", C, 3.0, 0.5, ENV), ("hits", C, 1.0, 1.0, ENV))
    assert bucket.aggregates(1010.0, 10.0, []) == [
        {"name": "hits", "type": "counter", "tags": {"env": "prod"}, "timestamp": 1010, "interval": 10,
         "value": 7.0, "rate": 0.7},
    ]


def test_counters_with_different_tags_are_different_series() -> None:
    bucket = bucket_with(("hits", C, 1.0, 1.0, ENV), ("hits", C, 2.0, 1.0, ()))
    assert bucket.counters == {series_key("hits", ENV): 1.0, series_key("hits", ()): 2.0}


def test_timer_count_is_corrected_by_rate_and_stats_use_values_received() -> None:
    # Two timings at @0.25 stand for 4 each -> count 8; stats over 100 and 300:
    # sum 400, mean 200, median (100+300)/2 = 200, stddev 100, p50 rank ceil(1) = 1 -> 100.
    bucket = bucket_with(("db", T, 300.0, 0.25, ()), ("db", T, 100.0, 0.25, ()))
    assert bucket.aggregates(1010.0, 10.0, [50.0]) == [
        {"name": "db", "type": "timer", "tags": {}, "timestamp": 1010, "interval": 10,
         "stats": {"count": 8.0, "sum": 400.0, "min": 100.0, "max": 300.0, "mean": 200.0, "median": 200.0,
                   "stddev": 100.0, "p50": 100.0}},
    ]


def test_set_counts_distinct_members_as_text() -> None:
    # "1" and "1.0" are different members: a set compares what was sent, not numbers.
    bucket = bucket_with(("users", S, "a", 1.0, ()), ("users", S, "b", 1.0, ()), ("users", S, "a", 1.0, ()),
                         ("users", S, "1", 1.0, ()), ("users", S, "1.0", 1.0, ()))
    assert bucket.aggregates(1010.0, 10.0, []) == [
        {"name": "users", "type": "set", "tags": {}, "timestamp": 1010, "interval": 10, "value": 4.0},
    ]


def test_traces_count_events_corrected_by_rate() -> None:
    # Two events at full rate + one at @0.5 (stands for 2) = 4.
    bucket = bucket_with(("app", TR, 1.0, 1.0, ()), ("app", TR, 1.0, 1.0, ()), ("app", TR, 1.0, 0.5, ()))
    assert bucket.aggregates(1010.0, 10.0, []) == [
        {"name": "app", "type": "trace", "tags": {}, "timestamp": 1010, "interval": 10, "value": 4.0},
    ]


def test_bucket_aggregates_leave_gauges_out() -> None:
    bucket = bucket_with(("temp", G, 5.0, 1.0, ()), ("temp", GD, 1.0, 1.0, ()))
    assert bucket.aggregates(1010.0, 10.0, []) == []


def test_gauge_set_then_delta_adds_to_the_new_value() -> None:
    assert gauge_after([("temp", G, 10.0, 1.0, ()), ("temp", GD, -3.0, 1.0, ())]) == {("temp", ()): 7.0}


def test_gauge_delta_before_set_in_one_interval_is_replaced_by_the_set() -> None:
    # The previous interval left 100; this one: +3 then set 10 -> 10, not 113 or 13.
    assert gauge_after([("temp", G, 100.0, 1.0, ())],
                       [("temp", GD, 3.0, 1.0, ()), ("temp", G, 10.0, 1.0, ())]) == {("temp", ()): 10.0}


def test_gauge_delta_in_a_later_interval_adds_to_the_carried_value() -> None:
    assert gauge_after([("temp", G, 10.0, 1.0, ())], [("temp", GD, 5.0, 1.0, ())]) == {("temp", ()): 15.0}


def test_gauge_delta_on_an_unknown_gauge_starts_from_zero() -> None:
    assert gauge_after([("temp", GD, -4.0, 1.0, ()), ("temp", GD, 1.5, 1.0, ())]) == {("temp", ()): -2.5}


def test_gauge_ignores_sample_rate() -> None:
    assert gauge_after([("temp", G, 8.0, 0.5, ())]) == {("temp", ()): 8.0}


def test_gauge_is_reported_until_idle_for_expire_after_intervals() -> None:
    gauges = Gauges(expire_after=3, limit=unlimited())
    gauges.apply({"temp": [True, 5.0]}, 5)
    # Set in interval 5: reported at 5, 6, 7 (idle 0, 1, 2); idle 3 at interval 8 -> gone and forgotten.
    for index in (5, 6, 7):
        assert [a["value"] for a in gauges.aggregates(index, float(index), 1.0)] == [5.0]
    assert gauges.aggregates(8, 8.0, 1.0) == []
    assert gauges.values == {}


def test_gauge_update_restarts_its_expiry() -> None:
    gauges = Gauges(expire_after=3, limit=unlimited())
    gauges.apply({"temp": [True, 5.0]}, 5)
    gauges.apply({"temp": [False, 1.0]}, 7)
    # Last changed at 7: still there at 9, gone at 10.
    assert gauges.aggregates(9, 9.0, 1.0) == [
        {"name": "temp", "type": "gauge", "tags": {}, "timestamp": 9, "interval": 1, "value": 6.0},
    ]
    assert gauges.aggregates(10, 10.0, 1.0) == []


def test_series_beyond_the_limit_fold_into_the_overflow_series_keeping_the_total() -> None:
    # Limit 2: users a and b keep their series; c, d (twice) and a timer of e fold into overflow.
    limit = SeriesLimit(2, OVERFLOW)
    bucket = bucket_with(("hits", C, 1.0, 1.0, ("user", "a")), ("hits", C, 2.0, 1.0, ("user", "b")),
                         ("hits", C, 3.0, 1.0, ("user", "c")), ("hits", C, 4.0, 1.0, ("user", "d")),
                         ("hits", C, 5.0, 1.0, ("user", "d")), ("other", C, 6.0, 1.0, ("user", "z")),
                         ("hits", T, 7.0, 1.0, ("user", "e")), limit=limit)
    counters = {(a["name"], tuple(a["tags"].items())): a["value"]
                for a in bucket.aggregates(10.0, 10.0, []) if a["type"] == "counter"}
    assert counters == {("hits", (("user", "a"),)): 1.0, ("hits", (("user", "b"),)): 2.0,
                        ("hits", (OVERFLOW,)): 12.0, ("other", (("user", "z"),)): 6.0}
    (timer,) = [a for a in bucket.aggregates(10.0, 10.0, []) if a["type"] == "timer"]
    assert timer["tags"] == dict([OVERFLOW]) and timer["stats"]["sum"] == 7.0
    assert limit.folded == {"hits": 3}  # c, d and e: d's second sample reuses its folded key


def test_gauges_are_limited_per_name_and_expiry_frees_room() -> None:
    limit = SeriesLimit(1, OVERFLOW)
    gauges = Gauges(expire_after=2, limit=limit)
    gauges.apply(bucket_with(("g", G, 1.0, 1.0, ("h", "a"))).gauge_changes, 0)
    gauges.apply(bucket_with(("g", G, 2.0, 1.0, ("h", "b"))).gauge_changes, 1)
    assert {key: value for key, (value, _) in gauges.values.items()} == {series_key("g", ("h", "a")): 1.0,
                                                                         series_key("g", OVERFLOW): 2.0}
    gauges.aggregates(2, 30.0, 10.0)  # a (idle since 0) expires; the overflow gauge was seen at 1
    gauges.apply(bucket_with(("g", G, 3.0, 1.0, ("h", "c"))).gauge_changes, 2)
    assert series_key("g", ("h", "c")) in gauges.values


def test_a_new_gauge_past_the_shards_live_limit_is_dropped_and_counted_and_the_live_ones_stay_exact() -> None:
    gauges = Gauges(expire_after=2, limit=unlimited(), max_live=2)
    gauges.apply({"a": [True, 1.0], "b": [True, 2.0], "c": [True, 3.0]}, 0)
    gauges.apply({"a": [False, 10.0], "d": [True, 4.0], "c": [True, 3.0]}, 1)
    # c came in both intervals and was dropped in each (counted twice: once per interval, as folding is).
    assert {key: value for key, (value, _) in gauges.values.items()} == {"a": 11.0, "b": 2.0}
    assert gauges.dropped == 3
    gauges.aggregates(2, 30.0, 10.0)  # b (idle since 0) expires: room for one new gauge
    gauges.apply({"e": [True, 5.0], "f": [True, 6.0]}, 2)
    assert {key: value for key, (value, _) in gauges.values.items()} == {"a": 11.0, "e": 5.0}
    assert gauges.dropped == 4
