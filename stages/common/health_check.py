"""Why a running instance is not healthy, from the figures its stages publish in the run directory.

One answer for ``pystatsd status`` and for the forwarder's ``GET /health``: a stage silent too long,
one that cannot start, a sink failing.
"""

from __future__ import annotations

import time
from typing import Any

from stages.common.figure_schemas import ForwarderFigures, SinkFigures, figures_of
from stages.common.process_names import AGGREGATOR, FORWARDER, RECEIVER, is_process_of, process_name
from stages.rundir.figures import START_ERROR

#: A stage whose figures are older than this many intervals (plus a few seconds) is not working.
STALE_AFTER_INTERVALS = 2
STALE_GRACE_SECS = 5.0



def health(records: dict[str, dict[str, Any]], shards: int, interval: float,
           now: float | None = None) -> list[str]:
    """Why the instance is not healthy (empty when it is): a stage silent too long, a sink failing."""
    now = time.time() if now is None else now
    stale_after = STALE_AFTER_INTERVALS * interval + STALE_GRACE_SECS
    reasons: list[str] = []
    expected = [process_name(FORWARDER), *(process_name(AGGREGATOR, k) for k in range(shards))]
    fleet = any(record.get("schema") == "fleet" for record in records.values())
    if not fleet and not any(is_process_of(name, RECEIVER) for name in records):
        reasons.append("receiver: no figures published yet")
    for name in expected + sorted(n for n in records if is_process_of(n, RECEIVER)):
        record = records.get(name)
        if record is None:
            reasons.append(f"{name}: no figures published yet")
        elif START_ERROR in record["figures"]:
            reasons.append(f"{name}: cannot start: {record['figures'][START_ERROR]}")
        elif now - record["updated"] > stale_after:
            reasons.append(f"{name}: silent for {now - record['updated']:.0f} s")
    for sink, figures in sinks_of(records).items():
        if figures["failing"]:
            reasons.append(f"sink {sink}: {figures['failing']}")
    return reasons


def sinks_of(records: dict[str, dict[str, Any]]) -> dict[str, SinkFigures]:
    """The forwarder's figures per sink, if it published figures of its schema."""
    forwarder = figures_of(records.get(process_name(FORWARDER), {}), ForwarderFigures)
    return {} if forwarder is None else forwarder["sinks"]
