"""ShardState with a fixed clock: interval alignment, when intervals are due, late batches, the batch ledger.

Every state is built at ``now=1000.0`` with 10 s intervals unless a test says otherwise: interval
k covers [10k, 10k+10), so the open interval is 100 = [1000, 1010) and 99 counts as flushed.
"""

from __future__ import annotations

from typing import Any

from stages.aggregator.shard import (
    FLUSH_GRACE_SECS,
    GAUGE_CATCH_UP_INTERVALS,
    ClosedInterval,
    ShardState,
    overrun_secs,
)
from stages.common.contract import BatchHeader
from stages.common.model import MetricType, series_key
from tests.unit.bodies import one_body

C, G = int(MetricType.COUNTER), int(MetricType.GAUGE)


def make_state(prefix: str = "", interval: float = 10.0, default_tags: dict[str, str] | None = None,
               shard: int = 0, expire_after: int = 30) -> ShardState:
    return ShardState(shard, interval, [50.0], expire_after, prefix, default_tags or {}, now=1000.0)


def send(state: ShardState, ts: float, samples: list[tuple], src: str = "r1", epoch: int = 1, seq: int = 0) -> None:
    state.add_batch(BatchHeader(src=src, epoch=epoch, seq=seq, ts=ts, n=len(samples)), one_body(samples))


def hits(value: float) -> tuple:
    return ("hits", C, value, 1.0, ())


def counter(name: str, value: float, timestamp: int, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "type": "counter", "tags": tags or {}, "timestamp": timestamp, "interval": 10,
            "value": value, "rate": value / 10}


def self_metrics(closed: ClosedInterval) -> list[dict[str, Any]]:
    """The self metrics of a flush, less flush_ms: its value is a measured time, never the same twice."""
    names = [a["name"] for a in closed.aggregates]
    assert "pystatsd.aggregator.flush_ms" in names
    return [a for a in closed.aggregates
            if a["name"].startswith("pystatsd.") and a["name"] != "pystatsd.aggregator.flush_ms"]


def test_batches_a_millisecond_either_side_of_an_edge_land_in_different_intervals() -> None:
    state = make_state()
    send(state, 1009.999, [hits(1.0)])
    send(state, 1010.001, [hits(2.0)], seq=1)
    first, second = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert (first.index, first.start, first.aggregates) == (100, 1000.0, [counter("hits", 1.0, 1010)])
    assert (second.index, second.start, second.aggregates) == (101, 1010.0, [counter("hits", 2.0, 1020)])


def test_timestamp_is_the_interval_end_as_an_int_when_whole() -> None:
    state = make_state()
    send(state, 1004.0, [hits(1.0)])
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    timestamp = closed.aggregates[0]["timestamp"]
    assert timestamp == 1010
    assert type(timestamp) is int


def test_fractional_interval_end_stays_a_float() -> None:
    # 0.5 s intervals: ts 1000.2 is in [1000.0, 1000.5), index 2000, which ends at 1000.5.
    state = make_state(interval=0.5)
    send(state, 1000.2, [hits(1.0)])
    (closed,) = state.due(1000.5 + FLUSH_GRACE_SECS)
    assert (closed.index, closed.start) == (2000, 1000.0)
    assert (closed.aggregates[0]["timestamp"], closed.aggregates[0]["interval"]) == (1000.5, 0.5)


def test_interval_is_due_only_once_its_end_plus_grace_has_passed() -> None:
    state = make_state()
    send(state, 1005.0, [hits(1.0)])
    assert state.next_deadline() == 1010.0 + FLUSH_GRACE_SECS
    assert state.due(1010.0) == []
    assert state.due(1010.0 + FLUSH_GRACE_SECS - 0.001) == []
    assert [c.index for c in state.due(1010.0 + FLUSH_GRACE_SECS)] == [100]
    # Closed once: asking again at the same time closes nothing more.
    assert state.due(1010.0 + FLUSH_GRACE_SECS) == []


def test_late_batch_is_folded_into_the_oldest_open_interval_and_counted() -> None:
    state = make_state(prefix="pystatsd.")
    send(state, 1005.0, [hits(1.0)], seq=0)
    state.due(1010.0 + FLUSH_GRACE_SECS)
    # Interval 100 is closed; a batch stamped 1009.9 (interval 100) arrives after all.
    send(state, 1009.9, [hits(1.0), hits(1.0)], seq=1)
    send(state, 1012.0, [hits(1.0)], seq=2)
    (closed,) = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert closed.index == 101
    assert closed.aggregates[0] == counter("hits", 3.0, 1020)
    shard_tags = {"shard": "0"}
    assert self_metrics(closed) == [
        # One series in the interval: hits.
        {"name": "pystatsd.aggregator.series", "type": "gauge", "tags": shard_tags, "timestamp": 1020,
         "interval": 10, "value": 1.0},
        {"name": "pystatsd.aggregator.gauges", "type": "gauge", "tags": shard_tags, "timestamp": 1020,
         "interval": 10, "value": 0.0},
        counter("pystatsd.aggregator.metrics", 3.0, 1020, shard_tags),
        counter("pystatsd.aggregator.late_metrics", 2.0, 1020, shard_tags),
    ]


def test_late_metrics_are_reported_once() -> None:
    state = make_state(prefix="pystatsd.")
    state.due(1010.0 + FLUSH_GRACE_SECS)
    send(state, 1009.0, [hits(1.0)])
    state.due(1020.0 + FLUSH_GRACE_SECS)
    (closed,) = state.due(1030.0 + FLUSH_GRACE_SECS)
    assert "pystatsd.aggregator.late_metrics" not in [a["name"] for a in closed.aggregates]


def test_seq_gaps_are_counted_per_src_and_epoch() -> None:
    state = make_state(prefix="pystatsd.")
    for seq in (0, 1, 4):  # 2 and 3 never arrived
        send(state, 1001.0, [], src="r1", epoch=1, seq=seq)
    send(state, 1001.0, [], src="r1", epoch=2, seq=10)  # a restarted sender: a new stream, no gap
    for seq in (5, 7):  # 6 never arrived
        send(state, 1001.0, [], src="r2", epoch=1, seq=seq)
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    assert closed.seq_gaps == {"r1": 2, "r2": 1}
    lost = [a for a in self_metrics(closed) if a["name"] == "pystatsd.aggregator.lost_batches"]
    assert lost == [
        counter("pystatsd.aggregator.lost_batches", 2.0, 1010, {"shard": "0", "src": "r1"}),
        counter("pystatsd.aggregator.lost_batches", 1.0, 1010, {"shard": "0", "src": "r2"}),
    ]


def test_seq_gaps_are_reported_with_one_flush_only() -> None:
    state = make_state()
    send(state, 1001.0, [], seq=0)
    send(state, 1001.0, [], seq=3)
    state.due(1010.0 + FLUSH_GRACE_SECS)
    send(state, 1011.0, [], seq=4)
    (closed,) = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert closed.seq_gaps == {}


def test_batches_of_summed_repeats_count_the_metrics_they_stand_for() -> None:
    # The receiver sent "hits:1|c" 500 times as one sample of 500, then 20 metrics as 2 samples; a
    # batch of 30 metrics between them never arrived.
    state = make_state(prefix="pystatsd.")
    state.add_batch(BatchHeader(src="r1", epoch=1, seq=0, ts=1001.0, n=1, metrics=500), one_body([hits(500.0)]))
    state.add_batch(BatchHeader(src="r1", epoch=1, seq=2, ts=1002.0, n=2, sent_before=530, metrics=20),
                    one_body([hits(10.0), hits(10.0)]))
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    assert closed.aggregates[0] == counter("hits", 520.0, 1010)
    assert closed.covers == {"r1@1": [0, 0, 2, 550]}
    figures = {a["name"]: a["value"] for a in self_metrics(closed)}
    assert figures["pystatsd.aggregator.metrics"] == 520.0
    assert figures["pystatsd.aggregator.lost_metrics"] == 30.0


def test_close_all_closes_open_intervals_before_they_are_due() -> None:
    state = make_state()
    send(state, 1003.0, [hits(1.0)])
    send(state, 1013.0, [hits(2.0)], seq=1)
    assert state.due(1005.0) == []
    closed = state.close_all()
    assert [(c.index, c.aggregates) for c in closed] == [
        (100, [counter("hits", 1.0, 1010)]),
        (101, [counter("hits", 2.0, 1020)]),
    ]
    assert state.buckets == {}


def test_close_all_with_no_data_flushes_the_next_interval_with_its_gauges() -> None:
    state = make_state()
    send(state, 1005.0, [("temp", G, 21.5, 1.0, ())])
    state.due(1010.0 + FLUSH_GRACE_SECS)
    (closed,) = state.close_all()
    assert (closed.index, closed.aggregates) == (101, [
        {"name": "temp", "type": "gauge", "tags": {}, "timestamp": 1020, "interval": 10, "value": 21.5},
    ])


def test_after_a_stall_only_intervals_with_data_and_the_newest_are_flushed() -> None:
    state = make_state()
    send(state, 1001.0, [hits(1.0)])
    send(state, 1031.0, [hits(1.0)], seq=1)
    # At 1060.25 intervals 100..105 are due; 101, 102 and 104 had no data.
    assert [c.index for c in state.due(1060.0 + FLUSH_GRACE_SECS)] == [100, 103, 105]


def test_after_a_stall_an_interval_without_data_is_flushed_while_a_gauge_is_live_in_it() -> None:
    state = make_state(expire_after=2)
    send(state, 1005.0, [("temp", G, 21.5, 1.0, ())])
    # At 1060.25 intervals 100..105 are due: the gauge set in 100 is idle 1 in 101 and expired in 102.
    closed = state.due(1060.0 + FLUSH_GRACE_SECS)
    assert [(c.index, [a["value"] for a in c.aggregates]) for c in closed] == [(100, [21.5]), (101, [21.5]),
                                                                              (105, [])]


def test_after_a_long_stall_only_the_newest_intervals_are_flushed_for_their_gauges_alone() -> None:
    state = make_state(expire_after=30)
    send(state, 1005.0, [("temp", G, 21.5, 1.0, ())])
    # 100..129 are due, the gauge live in each: 100 has data, and the newest GAUGE_CATCH_UP_INTERVALS go too.
    closed = state.due(1300.0 + FLUSH_GRACE_SECS)
    assert [c.index for c in closed] == [100, *range(130 - GAUGE_CATCH_UP_INTERVALS, 130)]
    assert all([a["value"] for a in c.aggregates] == [21.5] for c in closed)


def test_gauge_is_carried_until_idle_for_expire_after_intervals() -> None:
    state = make_state(expire_after=2)
    send(state, 1005.0, [("temp", G, 21.5, 1.0, ())])
    values = [[a["value"] for a in c.aggregates] for c in state.due(1010.0 + FLUSH_GRACE_SECS)]
    values += [[a["value"] for a in c.aggregates] for c in state.due(1020.0 + FLUSH_GRACE_SECS)]
    values += [[a["value"] for a in c.aggregates] for c in state.due(1030.0 + FLUSH_GRACE_SECS)]
    # Set in 100; idle 1 in 101; idle 2 in 102 -> gone.
    assert values == [[21.5], [21.5], []]


def test_a_shard_retired_by_a_reshard_leaves_its_gauges_out_of_the_intervals_from_the_switch() -> None:
    state = make_state()
    state.gauges_handed_at = 101  # the new ring reports this shard's gauges from [1010, 1020) on
    send(state, 1005.0, [("temp", G, 21.5, 1.0, ())])
    send(state, 1012.0, [hits(1.0)], seq=1)
    # A stall: the last interval before the switch and the first after it close together.
    closed = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert [(c.index, [a["name"] for a in c.aggregates]) for c in closed] == [(100, ["temp"]), (101, ["hits"])]
    assert state.gauges.values  # still here for the carry, which the loop writes after this flush


def test_a_new_rings_shard_leaves_carried_gauges_out_of_the_intervals_before_its_ring() -> None:
    state = make_state()
    state.gauges_taken_over_at = 101  # its ring takes over from [1010, 1020)
    # Carried (take_carried) before this shard closed the old ring's last interval, which that ring reports.
    state.gauges.values[state.gauges.limit.admit(series_key("temp", ()))] = [21.5, 99]
    send(state, 1005.0, [hits(1.0)])
    closed = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert [(c.index, [a["name"] for a in c.aggregates]) for c in closed] == [(100, ["hits"]), (101, ["temp"])]


def test_empty_self_metrics_prefix_turns_self_metrics_off() -> None:
    state = make_state(prefix="")
    send(state, 1001.0, [hits(1.0)], seq=0)
    send(state, 1001.0, [hits(1.0)], seq=2)  # seq 1 lost
    (with_gap,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    send(state, 1009.0, [hits(1.0)], seq=3)  # late
    (with_late,) = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert with_gap.aggregates == [counter("hits", 2.0, 1010)]
    assert with_late.aggregates == [counter("hits", 1.0, 1020)]
    # The flush header still tells the forwarder about the gap.
    assert with_gap.seq_gaps == {"r1": 1}


def test_self_metrics_carry_the_agent_default_tags() -> None:
    state = make_state(prefix="pystatsd.", default_tags={"environment": "stage"}, shard=3)
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    assert {a["name"]: a["tags"] for a in closed.aggregates} == {
        "pystatsd.aggregator.series": {"environment": "stage", "shard": "3"},
        "pystatsd.aggregator.gauges": {"environment": "stage", "shard": "3"},
        "pystatsd.aggregator.flush_ms": {"environment": "stage", "shard": "3"},
    }


def test_new_gauges_past_gauges_limit_are_dropped_and_reported_with_the_interval() -> None:
    state = ShardState(0, 10.0, [50.0], 30, "pystatsd.", {}, now=1000.0, gauges_limit=2)
    send(state, 1001.0, [("g1", G, 1.0, 1.0, ()), ("g2", G, 2.0, 1.0, ()), ("g3", G, 3.0, 1.0, ())])
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    assert sorted(a["name"] for a in closed.aggregates if a["type"] == "gauge" and "pystatsd" not in a["name"]) == [
        "g1", "g2"]
    assert closed.dropped_gauges == 1
    (dropped,) = [a for a in closed.aggregates if a["name"] == "pystatsd.aggregator.dropped_gauges"]
    assert dropped["value"] == 1 and dropped["tags"] == {"shard": "0"}
    (closed,) = state.due(1020.0 + FLUSH_GRACE_SECS)
    assert closed.dropped_gauges == 0
    assert "pystatsd.aggregator.dropped_gauges" not in [a["name"] for a in closed.aggregates]


def test_a_flush_handed_on_after_the_next_interval_ended_is_an_overrun() -> None:
    state = make_state()
    send(state, 1001.0, [hits(1.0)])
    (closed,) = state.due(1010.0 + FLUSH_GRACE_SECS)
    # Interval [1000, 1010): due at 1010.25; the next one ends at 1020, when its own flush is due.
    assert overrun_secs(closed, 1010.3) < 0
    assert overrun_secs(closed, 1019.9) < 0
    assert overrun_secs(closed, 1021.5) == 1.5
