"""A shard's hand-off to its next instance: the interval flushed once, whole, as if never restarted.

Each test runs the same batches through a shard that is "restarted" (captured, encoded, decoded,
restored into a fresh state) and through one that is not, and compares what they flush.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stages.aggregator.handoff import (
    Handoff,
    HandoffRefused,
    capture,
    handoff_path,
    restore,
    take_handoff,
    write_handoff,
)
from stages.aggregator.shard import FLUSH_GRACE_SECS, ShardState
from stages.common.contract import BatchHeader
from stages.common.model import MetricType
from tests.unit.bodies import one_batch, one_body

C, G, T, S, TR = (int(MetricType.COUNTER), int(MetricType.GAUGE), int(MetricType.TIMER), int(MetricType.SET),
                  int(MetricType.TRACE))
SHARDS = 2
#: Interval 100 is [1000, 1010); the states are made at 1000.0.
BEFORE = [("hits", C, 2.0, 0.5, ("env", "prod")), ("depth", G, 7.0, 1.0, ()), ("lat", T, 3.5, 1.0, ()),
          ("lat", T, 9.0, 0.1, ()), ("users", S, "ann", 1.0, ()), ("job", TR, 1.0, 1.0, ()),
          *[("wide", C, 1.0, 1.0, ("id", str(i))) for i in range(5)]]
AFTER = [("hits", C, 1.0, 1.0, ("env", "prod")), ("depth", G, -2.0, 1.0, ()), ("lat", T, 1.0, 1.0, ()),
         ("users", S, "bob", 1.0, ()), ("wide", C, 1.0, 1.0, ("id", "new"))]


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def bucket_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test with the compiled bucket (where built) and with the Python one."""
    if request.param == "pure":
        monkeypatch.setenv("PYSTATSD_PURE_PYTHON", "1")


def make_state(now: float = 1000.0, shard: int = 0, interval: float = 10.0) -> ShardState:
    return ShardState(shard, interval, [50.0, 90.0], 3, "pystatsd.", {}, now=now, series_limit=3)


def send(state: ShardState, ts: float, samples: list[tuple], seq: int, sent_before: int) -> None:
    state.add_batch(BatchHeader(src="r", epoch=7, seq=seq, ts=ts, n=len(samples), sent_before=sent_before,
                                metrics=len(samples)), one_body(samples))


def restarted(state: ShardState, now: float) -> tuple[ShardState, tuple[int, int]]:
    handoff = Handoff.decode(capture(state, SHARDS, epoch=42, seq=9).encode())
    successor = make_state(now)
    return successor, restore(successor, handoff, SHARDS, now, max_age_secs=300)


def flushed(state: ShardState, now: float) -> list[tuple[int, list[dict[str, Any]], dict[str, list[int]]]]:
    return [(closed.index, [a for a in closed.aggregates if a["name"] != "pystatsd.aggregator.flush_ms"],
             closed.covers) for closed in state.due(now)]


def test_a_restart_mid_interval_flushes_the_interval_once_as_if_never_restarted() -> None:
    control, restarting = make_state(), make_state()
    for state in (control, restarting):
        send(state, 1001.0, BEFORE, seq=0, sent_before=0)
    successor, stream = restarted(restarting, now=1004.0)
    assert stream == (42, 9)
    for state in (control, successor):
        send(state, 1005.0, AFTER, seq=1, sent_before=len(BEFORE))
    expected = flushed(control, 1010.0 + FLUSH_GRACE_SECS)
    assert flushed(successor, 1010.0 + FLUSH_GRACE_SECS) == expected
    (_, aggregates, covers), = expected
    assert covers == {"r@7": [0, 0, 1, len(BEFORE) + len(AFTER)]}
    by_name = {(a["name"], tuple(sorted(a["tags"].items()))): a for a in aggregates}
    assert by_name[("hits", (("env", "prod"),))]["value"] == 5.0
    assert by_name[("lat", ())]["stats"]["count"] == 12
    # Three series of "wide" kept, the other three (two before, one after) in its overflow series.
    assert by_name[("wide", (("pystatsd_overflow", "true"),))]["value"] == 3.0
    # The gauges carry on too: the next interval reports 5.0 in both.
    assert flushed(successor, 1020.0 + FLUSH_GRACE_SECS) == flushed(control, 1020.0 + FLUSH_GRACE_SECS)


def test_a_restart_mid_interval_keeps_each_series_metrics_for_top() -> None:
    control, restarting = make_state(), make_state()

    def send_counted(state: ShardState, samples: list[tuple], seq: int, sent_before: int) -> None:
        body, entries, entry_metrics = one_batch(samples)
        state.add_batch(BatchHeader(src="r", epoch=7, seq=seq, ts=1001.0 + 4 * seq, n=entries,
                                    sent_before=sent_before, metrics=len(samples), entry_metrics=entry_metrics),
                        body)

    for state in (control, restarting):
        state.top_tag_keys = []
        send_counted(state, BEFORE, seq=0, sent_before=0)
    successor, _ = restarted(restarting, now=1004.0)
    successor.top_tag_keys = []
    for state in (control, successor):
        send_counted(state, AFTER, seq=1, sent_before=len(BEFORE))
    (expected,) = [closed.busiest for closed in control.due(1010.0 + FLUSH_GRACE_SECS)]
    assert [closed.busiest for closed in successor.due(1010.0 + FLUSH_GRACE_SECS)] == [expected]
    assert expected is not None
    # lat: two samples before, one after; wide: six series of one (three kept, three in the overflow series)
    assert {(n["name"], n["rate"], n["series"]) for n in expected["names"]} == {
        ("hits", 0.2, 1), ("depth", 0.2, 1), ("lat", 0.3, 1), ("users", 0.2, 1), ("job", 0.1, 1), ("wide", 0.6, 4)}


def test_an_interval_that_ended_while_no_instance_ran_is_flushed_at_start_with_its_own_timestamp() -> None:
    control, restarting = make_state(), make_state()
    for state in (control, restarting):
        send(state, 1009.0, BEFORE, seq=0, sent_before=0)
    successor, _ = restarted(restarting, now=1023.0)
    first = flushed(successor, 1023.0)[0]
    assert (first[0], {a["timestamp"] for a in first[1]}) == (100, {1010})
    assert first == flushed(control, 1023.0)[0]


def test_a_foreign_or_stale_handoff_is_refused() -> None:
    state = make_state()
    send(state, 1001.0, BEFORE, seq=0, sent_before=0)
    handoff = capture(state, SHARDS, epoch=1, seq=0)
    with pytest.raises(HandoffRefused, match="it is shard 0 of 2 at 10 s, this is shard 1 of 2 at 10 s"):
        restore(make_state(shard=1), handoff, SHARDS, 1002.0, 300)
    with pytest.raises(HandoffRefused, match="this is shard 0 of 4"):
        restore(make_state(), handoff, 4, 1002.0, 300)
    with pytest.raises(HandoffRefused, match="more than 300 s"):
        restore(make_state(), handoff, SHARDS, handoff.written_at + 301, 300)
    with pytest.raises(HandoffRefused, match="unreadable|not a pystatsd"):
        Handoff.decode(b"\x93\x01\x02\x03")


def test_the_file_is_private_and_taken_once(tmp_path: Path) -> None:
    state = make_state()
    send(state, 1001.0, BEFORE, seq=0, sent_before=0)
    path = handoff_path(tmp_path, 0, SHARDS)
    write_handoff(path, capture(state, SHARDS, epoch=1, seq=3))
    assert path.stat().st_mode & 0o777 == 0o600
    taken = take_handoff(path)
    assert taken is not None and taken.seq == 3 and sorted(taken.buckets) == [100]
    assert take_handoff(path) is None and not path.exists()
