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
