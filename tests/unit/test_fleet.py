"""Edge partials merged into fleet aggregates: exact sums and percentiles while under the bound, the
sketch's stated error past it, latest gauges, set unions, duplicates counted once."""

from __future__ import annotations

import math
import random

import pytest

from stages.aggregator.fleet.bucket import FLEET_TAG, FleetBucket
from stages.aggregator.histogram_bounds import BucketBounds
from stages.aggregator.partials import PartialSource, partial_records
from stages.aggregator.series import IntervalBucket, SeriesLimit
from stages.aggregator.sketch import RELATIVE_ACCURACY
from stages.aggregator.stats import percentile_key, summary
from stages.common import contract
from stages.common.config import HistogramBuckets
from stages.common.model import MetricType
from stages.common.partial_bounds import PartialBounds
from tests.unit.bodies import one_body

PCTS = [50.0, 90.0, 99.0]
BOUNDS = PartialBounds(partial_max_values=100, partial_max_members=50)


def edge_partials(samples: list[tuple], host: str, gauges: dict | None = None, src: str = "0@1") -> list[bytes]:
    bucket = IntervalBucket(SeriesLimit(10_000, ("pystatsd_overflow", "true")), compiled=False)
    bucket.merge_frame(one_body(samples))
    bucket.close()
    return partial_records(bucket, gauges or {}, 100.0, 10.0, PartialSource(host, src, BOUNDS))


def fleet_of(*hosts: list[bytes]) -> FleetBucket:
    fleet = FleetBucket()
    for records in hosts:
        for value in records[1::2]:
            fleet.merge(*contract.decode_partial(value))
    return fleet


def by_name(fleet: FleetBucket) -> dict[str, dict]:
    return {a["name"]: a for a in fleet.aggregates(110.0, 10.0, PCTS)}


def test_counters_sum_over_hosts_and_every_aggregate_is_tagged_fleet() -> None:
    hosts = [edge_partials([("hits", MetricType.COUNTER, 3.0, 1.0, ("env", "prod")),
                            ("hits", MetricType.COUNTER, 1.0, 0.5, ("env", "prod"))], f"h{i}") for i in range(3)]
    out = by_name(fleet_of(*hosts))
    assert out["hits"]["value"] == 15.0
    assert out["hits"]["rate"] == 1.5
    assert out["hits"]["tags"] == {"env": "prod", FLEET_TAG[0]: FLEET_TAG[1]}


def test_records_are_keyed_by_series_so_every_host_lands_in_one_partition() -> None:
    a = edge_partials([("t", MetricType.TIMER, 1.0, 1.0, ("k", "v"))], "a")
    b = edge_partials([("t", MetricType.TIMER, 2.0, 1.0, ("k", "v"))], "b")
    assert a[0] == b[0] == b"t\x1fk\x1fv"


def test_fleet_percentiles_under_the_bound_are_the_exact_ones_over_all_hosts_values() -> None:
    rng = random.Random(5)
    per_host = [[rng.uniform(1, 500) for _ in range(30)] for _ in range(3)]
    hosts = [edge_partials([("lat", MetricType.TIMER, v, 1.0, ()) for v in values], f"h{i}")
             for i, values in enumerate(per_host)]
    stats = by_name(fleet_of(*hosts))["lat"]["stats"]
    everything = [v for values in per_host for v in values]
    assert stats == summary(everything, 90.0, PCTS)


def test_past_the_bound_moments_stay_exact_and_percentiles_are_within_the_sketch_error() -> None:
    rng = random.Random(7)
    per_host = [[rng.lognormvariate(3, 1) for _ in range(n)] for n in (500, 40, 2000)]
    hosts = [edge_partials([("lat", MetricType.TIMER, v, 1.0, ()) for v in values], f"h{i}")
             for i, values in enumerate(per_host)]
    stats = by_name(fleet_of(*hosts))["lat"]["stats"]
    everything = sorted(v for values in per_host for v in values)
    exact = summary(list(everything), len(everything), PCTS)
    for key in ("count", "min", "max"):
        assert stats[key] == exact[key]
    assert stats["sum"] == pytest.approx(exact["sum"], rel=1e-12)
    assert stats["stddev"] == pytest.approx(exact["stddev"], rel=1e-9)
    for pct in PCTS:
        # DDSketch's rank is q·(n-1), the nearest rank's ceil(q·n)-1: within 1 % of a value between the two.
        n = len(everything)
        low, high = everything[math.floor(pct / 100 * (n - 1))], everything[math.ceil(pct / 100 * n) - 1]
        assert low * (1 - RELATIVE_ACCURACY) <= stats[percentile_key(pct)] <= high * (1 + RELATIVE_ACCURACY), pct


def test_sample_rates_weight_the_count_past_the_bound_too() -> None:
    hosts = [edge_partials([("lat", MetricType.TIMER, float(v), 0.1, ()) for v in range(1, 201)], "h")]
    assert by_name(fleet_of(*hosts))["lat"]["stats"]["count"] == pytest.approx(2000.0)


def test_the_gauge_of_the_host_that_changed_it_last_wins_whatever_the_order() -> None:
    old = edge_partials([], "zz", gauges={"temp": [5.0, 8]})
    new = edge_partials([], "aa", gauges={"temp": [7.0, 9]})
    assert by_name(fleet_of(new, old))["temp"]["value"] == 7.0
    assert by_name(fleet_of(old, new))["temp"]["value"] == 7.0


def test_sets_are_the_exact_union_under_the_bound_and_an_estimate_past_it() -> None:
    small = [edge_partials([("users", MetricType.SET, f"u{i}", 1.0, ()) for i in range(h, h + 20)], f"h{h}")
             for h in (0, 10)]
    assert by_name(fleet_of(*small))["users"]["value"] == 30.0
    big = [edge_partials([("users", MetricType.SET, f"u{i}", 1.0, ()) for i in range(h, h + 3000)], f"h{h}")
           for h in (0, 1000)]
    estimate = by_name(fleet_of(*big))["users"]["value"]
    assert math.isclose(estimate, 4000, rel_tol=0.05)


def test_a_partial_sent_twice_is_merged_once_and_counted() -> None:
    records = edge_partials([("hits", MetricType.COUNTER, 2.0, 1.0, ())], "h")
    fleet = fleet_of(records, records)
    assert by_name(fleet)["hits"]["value"] == 2.0
    assert fleet.duplicates == 1
    # Another flush stream of the same host (a pipeline restarted mid-interval) is other data.
    fleet.merge(*contract.decode_partial(edge_partials([("hits", MetricType.COUNTER, 2.0, 1.0, ())], "h",
                                                       src="0@2")[1]))
    assert by_name(fleet)["hits"]["value"] == 4.0


def test_a_correction_has_only_the_series_the_late_partials_touched() -> None:
    fleet = fleet_of(edge_partials([("a", MetricType.COUNTER, 1.0, 1.0, ()), ("b", MetricType.COUNTER, 1.0, 1.0, ())],
                                   "h1"))
    fleet.take_touched()
    fleet.merge(*contract.decode_partial(edge_partials([("a", MetricType.COUNTER, 5.0, 1.0, ())], "h2")[1]))
    touched = fleet.take_touched()
    assert [(a["name"], a["value"]) for a in fleet.aggregates(110.0, 10.0, PCTS, only=touched)] == [("a", 6.0)]


def test_a_partial_record_round_trips_through_the_contract() -> None:
    header = contract.PartialHeader("h", "0@1", 100.0, 10.0, seen=90.0)
    body = contract.BatchBody([], ["g", True, 1.5], [], [], [])
    assert contract.decode_partial(contract.encode_partial(header, body)) == (header, body)
    with pytest.raises(contract.DecodeError):
        contract.decode_partial(b"\x93\xa3abc\x80\xc4\x00")


def test_a_record_of_more_than_one_entry_is_refused() -> None:
    header = contract.PartialHeader("h", "0@1", 100.0, 10.0)
    with pytest.raises(ValueError):
        FleetBucket().merge(header, contract.BatchBody(["a", 1.0, "b", 2.0], [], [], [], []))
    with pytest.raises(ValueError):
        FleetBucket().merge(header, contract.BatchBody(["a", 1.0], ["g", True, 1.0], [], [], []))




def test_fleet_buckets_are_exact_under_the_bound_and_from_the_sketch_bins_past_it() -> None:
    le = [10.0, 100.0, 1000.0]
    bounds = BucketBounds([HistogramBuckets("lat", le)])
    rng = random.Random(11)
    # h0 and h1 under the bound (h1 sampled at 0.5: each value counts 2), h2 past it (a sketch).
    per_host = [[rng.lognormvariate(4, 1.5) for _ in range(n)] for n in (30, 40, 2000)]
    rates = (1.0, 0.5, 1.0)
    hosts = [edge_partials([("lat", MetricType.TIMER, v, rate, ()) for v in values], f"h{i}")
             for i, (values, rate) in enumerate(zip(per_host, rates, strict=True))]
    exact_only = fleet_of(*hosts[:2]).aggregates(110.0, 10.0, PCTS, bounds=bounds)[0]["buckets"]
    assert exact_only == {"le": le, "counts": [sum(sum(v <= b for v in values) / rate for values, rate
                                                   in zip(per_host[:2], rates, strict=False)) for b in le] + [110.0]}
    past = fleet_of(*hosts).aggregates(110.0, 10.0, PCTS, bounds=bounds)[0]["buckets"]
    assert past["counts"][-1] == 2110.0
    for i, bound in enumerate(le):
        # The sketched host's values: each on its side of the bound, but for those within one bin (2 %) above it.
        sketched = per_host[2]
        low = exact_only["counts"][i] + sum(v <= bound for v in sketched)
        high = exact_only["counts"][i] + sum(v <= bound * (1 + 2 * RELATIVE_ACCURACY) * 1.0001 for v in sketched)
        assert low <= past["counts"][i] <= high, bound
    # No bounds for the name: no buckets.
    assert "buckets" not in fleet_of(*hosts).aggregates(110.0, 10.0, PCTS, bounds=BucketBounds([]))[0]
