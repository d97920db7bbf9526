"""``summary()``: exact statistics, every expected value worked out by hand in the comments."""

from __future__ import annotations

import pytest

from stages.aggregator.stats import bucket_counts, percentile_key, summary


def test_odd_count_summary() -> None:
    # sorted: 7 9 10 11 13 -> sum 50, mean 10, median the 3rd value 10.
    # deviations -3 -1 0 1 3, squares 9+1+0+1+9 = 20, population variance 20/5 = 4, stddev 2.
    # nearest rank = ceil(p/100 * 5): p50 -> ceil(2.5) = 3 -> 10; p90 -> ceil(4.5) = 5 -> 13;
    # p99.9 -> ceil(4.995) = 5 -> 13.
    assert summary([13.0, 7.0, 11.0, 9.0, 10.0], 5.0, [50.0, 90.0, 99.9]) == {
        "count": 5.0, "sum": 50.0, "min": 7.0, "max": 13.0, "mean": 10.0, "median": 10.0, "stddev": 2.0,
        "p50": 10.0, "p90": 13.0, "p99_9": 13.0,
    }


def test_even_count_median_is_the_mean_of_the_middle_two() -> None:
    # sorted: 2 4 4 4 5 5 7 9 -> sum 40, mean 5; middle two are 4 and 5 -> median 4.5.
    # squared deviations 9+1+1+1+0+0+4+16 = 32, variance 32/8 = 4, stddev 2.
    # nearest rank = ceil(p/100 * 8): p25 -> 2 -> 4; p50 -> 4 -> 4 (a value really sent, unlike the
    # median); p75 -> 6 -> 5; p100 -> 8 -> 9.
    assert summary([9.0, 2.0, 5.0, 4.0, 7.0, 4.0, 5.0, 4.0], 8.0, [25.0, 50.0, 75.0, 100.0]) == {
        "count": 8.0, "sum": 40.0, "min": 2.0, "max": 9.0, "mean": 5.0, "median": 4.5, "stddev": 2.0,
        "p25": 4.0, "p50": 4.0, "p75": 5.0, "p100": 9.0,
    }


def test_single_value_is_every_statistic_and_stddev_zero() -> None:
    # One value: rank max(1, ceil(0.01)) = 1 for p1, ceil(0.99) = 1 for p99.
    assert summary([42.0], 1.0, [1.0, 99.0]) == {
        "count": 1.0, "sum": 42.0, "min": 42.0, "max": 42.0, "mean": 42.0, "median": 42.0, "stddev": 0.0,
        "p1": 42.0, "p99": 42.0,
    }


def test_count_is_the_rate_corrected_count_not_the_number_of_values() -> None:
    # Two timings sent at @0.1 stand for 20; mean and sum stay those of the values received.
    stats = summary([1.0, 3.0], 20.0, [])
    assert stats == {"count": 20.0, "sum": 4.0, "min": 1.0, "max": 3.0, "mean": 2.0, "median": 2.0, "stddev": 1.0}


def test_p90_of_one_to_ten_is_nine() -> None:
    # ceil(0.9 * 10) = 9 -> the 9th smallest value.
    assert summary([float(v) for v in range(1, 11)], 10.0, [90.0])["p90"] == 9.0


@pytest.mark.parametrize(("pct", "n", "expected"), [
    # Nearest rank is ceil(pct/100 * n); when pct * n / 100 is a whole number r, the answer is the r-th
    # value. In floats 7/100*100 = 7.000000000000001 and 99.9/100*1000 = 999.0000000000001, whose
    # ceil is one rank too high.
    (7.0, 100, 7.0),
    (14.0, 100, 14.0),
    (99.9, 1000, 999.0),
])
def test_nearest_rank_is_exact_when_the_rank_is_whole(pct: float, n: int, expected: float) -> None:
    values = [float(v) for v in range(1, n + 1)]
    assert summary(values, float(n), [pct])[percentile_key(pct)] == expected


@pytest.mark.parametrize(("pct", "key"), [(90.0, "p90"), (50.0, "p50"), (99.9, "p99_9"), (99.99, "p99_99")])
def test_percentile_key_naming(pct: float, key: str) -> None:
    assert percentile_key(pct) == key


def test_bucket_counts_are_cumulative_le_with_inf_the_count() -> None:
    values = sorted([0.5, 1.0, 1.0, 2.0, 50.0])
    # 1.0 is on a bound: counted in it (le); 50 is past every bound: in +Inf alone.
    assert bucket_counts(values, 5.0, [0.5, 1.0, 10.0]) == [1.0, 3.0, 4.0, 5.0]
    assert bucket_counts(values, 5.0, [-1.0]) == [0.0, 5.0]
    assert bucket_counts(values, 5.0, [100.0]) == [5.0, 5.0]


def test_bucket_counts_weigh_each_value_by_the_rate_corrected_count() -> None:
    # Sent at @0.1: each value stands for 10, as count does.
    assert bucket_counts([1.0, 2.0, 3.0], 30.0, [1.0, 2.5]) == [10.0, 20.0, 30.0]
    # Mixed rates in one interval are spread evenly (the shard keeps no rate per value); +Inf stays the
    # count exactly and the counts never fall.
    counts = bucket_counts([1.0, 2.0, 3.0], 1 / 0.3 * 3, [1.0, 2.0, 3.0])
    assert counts[-1] == counts[-2] == 1 / 0.3 * 3
    assert counts == sorted(counts)
