"""The self-metrics registry: counters from totals or amounts, gauges, as samples or as aggregates."""

from __future__ import annotations

from stages.common.model import MetricType
from stages.common.selfstats import Reading, SelfStats

C, G = int(MetricType.COUNTER), int(MetricType.GAUGE)


def stats(prefix: str = "pystatsd.", defaults: dict[str, str] | None = None) -> SelfStats:
    return SelfStats(prefix, "receiver", {"receiver": "r1"}, defaults or {})


def test_a_counter_from_its_total_reports_what_it_added_and_nothing_while_unchanged() -> None:
    s = stats()
    s.total("datagrams", 5)
    s.total("bad_lines", 2, {"reason": "no_value"})
    assert s.take() == [Reading("pystatsd.receiver.datagrams", C, ("receiver", "r1"), 5.0),
                        Reading("pystatsd.receiver.bad_lines", C, ("reason", "no_value", "receiver", "r1"), 2.0)]
    s.total("datagrams", 5)
    s.total("bad_lines", 3, {"reason": "no_value"})
    assert s.take() == [Reading("pystatsd.receiver.bad_lines", C, ("reason", "no_value", "receiver", "r1"), 1.0)]
    assert s.take() == []


def test_amounts_and_gauges_are_reported_as_given_in_the_order_given() -> None:
    s = SelfStats("pystatsd.", "aggregator", {"shard": "0"}, {})
    s.gauge("series", 3)
    s.add("lost_metrics", 0, {"src": "r1"})
    s.add("metrics", 2)
    s.add("metrics", 1)
    assert [(r.name, r.kind, r.value) for r in s.take()] == [
        ("pystatsd.aggregator.series", G, 3.0), ("pystatsd.aggregator.lost_metrics", C, 0.0),
        ("pystatsd.aggregator.metrics", C, 3.0)]


def test_default_tags_apply_where_a_metric_does_not_set_them() -> None:
    s = stats(defaults={"env": "prod", "receiver": "default"})
    s.total("metrics", 1)
    assert s.take()[0].tags == ("env", "prod", "receiver", "r1")


def test_an_empty_prefix_reports_nothing_but_keeps_counting() -> None:
    s = stats(prefix="")
    s.total("datagrams", 5)
    assert not s.enabled and s.take() == []


def test_samples_for_the_window_and_aggregates_for_a_flush() -> None:
    s = stats()
    s.total("metrics", 4)
    assert s.samples() == [("pystatsd.receiver.metrics", C, 4.0, 1.0, ("receiver", "r1"))]
    f = SelfStats("pystatsd.", "fleet", {"shard": "0"}, {})
    f.total("partials", 4)
    f.total("partials", 9)
    f.gauge("hosts", 7)
    assert f.aggregates(1010.0, 10.0) == [
        {"name": "pystatsd.fleet.partials", "type": "counter", "tags": {"shard": "0"}, "timestamp": 1010,
         "interval": 10, "value": 9.0, "rate": 0.9},
        {"name": "pystatsd.fleet.hosts", "type": "gauge", "tags": {"shard": "0"}, "timestamp": 1010,
         "interval": 10, "value": 7.0}]
