"""The forwarder's loss ledger: what never reached the sinks, counted in metrics, across restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stages.forwarder.ledger import CoverageLedger


def test_a_gap_between_flushes_counts_the_metrics_and_batches_in_it(tmp_path: Path) -> None:
    ledger = CoverageLedger(tmp_path / "forwarder-ledger.json")
    ledger.record(0, {"r1@1": [0, 0, 2, 30]})
    ledger.record(0, {"r1@1": [5, 70, 6, 90]})  # batches 3 and 4 (metrics 30..70) never came
    assert (ledger.lost_batches, ledger.lost_metrics) == ({0: 2}, {0: 40})


def test_a_ledger_an_earlier_forwarder_wrote_goes_on_counting(tmp_path: Path) -> None:
    path = tmp_path / "forwarder-ledger.json"
    # As the forwarder has written it since the ledger came: "shard|src@epoch" → [seq, sent through, seen].
    path.write_text(json.dumps({"1|receiver@7": [4, 50, time.time()]}))
    ledger = CoverageLedger(path)
    ledger.record(1, {"receiver@7": [6, 60, 6, 65]})
    assert (ledger.lost_batches, ledger.lost_metrics) == ({1: 1}, {1: 10})
    assert json.loads(path.read_text())["1|receiver@7"][:2] == [6, 65]


def test_a_flush_done_before_an_older_one_is_no_gap_and_is_saved_after_it(tmp_path: Path) -> None:
    # A full buffer drops a queued flush while the sink still retries the one before: the later one
    # is done first. That is no loss; and until the older one is done too, a crash must count both.
    path = tmp_path / "forwarder-ledger.json"
    ledger = CoverageLedger(path)
    ledger.record(0, {"r1@1": [0, 0, 1, 20]})
    retried = ledger.taken(0, {"r1@1": [2, 20, 3, 40]})
    dropped = ledger.taken(0, {"r1@1": [4, 40, 5, 60]})
    ledger.done(dropped)
    assert (ledger.lost_batches, ledger.lost_metrics) == ({}, {})
    assert json.loads(path.read_text())["0|r1@1"][:2] == [1, 20]
    ledger.done(retried)
    assert (ledger.lost_batches, ledger.lost_metrics) == ({}, {})
    assert json.loads(path.read_text())["0|r1@1"][:2] == [5, 60]


def test_a_real_gap_behind_a_flush_still_being_retried_is_counted_once_it_is_done(tmp_path: Path) -> None:
    ledger = CoverageLedger(tmp_path / "forwarder-ledger.json")
    retried = ledger.taken(0, {"r1@1": [0, 0, 1, 20]})
    after_gap = ledger.taken(0, {"r1@1": [4, 50, 5, 70]})  # batches 2 and 3 (metrics 20..50) never came
    ledger.done(after_gap)
    assert ledger.lost_metrics == {}
    ledger.done(retried)
    assert (ledger.lost_batches, ledger.lost_metrics) == ({0: 2}, {0: 30})


def test_flushes_done_behind_a_stuck_one_take_no_more_room_than_one(tmp_path: Path) -> None:
    # A sink retrying one flush for hours while every later one is dropped from its full buffer.
    ledger = CoverageLedger(tmp_path / "forwarder-ledger.json")
    stuck = ledger.taken(0, {"r1@1": [0, 0, 0, 10]})
    for seq in range(1, 1001):
        ledger.done(ledger.taken(0, {"r1@1": [seq, seq * 10, seq, seq * 10 + 10]}))
    assert len(ledger.waiting[0]) == 2
    ledger.done(stuck)
    assert (ledger.waiting[0], ledger.lost_metrics) == ([], {})
    assert ledger.last["0|r1@1"][:2] == [1000, 10010]
