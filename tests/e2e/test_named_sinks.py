"""Several sinks of one kind in a real pipeline: two file sinks, one of the original form (``file:``)
and one named (``audit: {type: file}``), beside a console sink named ``shown``. Each file gets every
aggregate exactly once, status shows each name, and a reload that changes ``audit`` alone leaves
``file`` running untouched and hands what ``audit`` held to its new settings, losing nothing."""

from __future__ import annotations

import collections
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from harness.pipeline import Pipeline
from harness.traffic import SteadyTraffic
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.e2e

KEYS = [f"k{i}" for i in range(6)]
#: A counter and a timer per key, each datagram counted once by the traffic.
LOAD = {key: f"ns.c:1|c|#key:{key}\nns.t:{i}|ms|#key:{key}" for i, key in enumerate(KEYS)}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def per_key(found: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(counter sum, timer count) per key: each equals what was sent of that key when nothing was lost."""
    counters: dict[str, float] = collections.Counter()
    timers: dict[str, float] = collections.Counter()
    for line in found:
        aggregate: dict[str, Any] = json.loads(line)
        if aggregate["name"] == "ns.c":
            counters[aggregate["tags"]["key"]] += aggregate["value"]
        elif aggregate["name"] == "ns.t":
            timers[aggregate["tags"]["key"]] += aggregate["stats"]["count"]
    return counters, timers


def sink_rows(status: str) -> dict[str, list[str]]:
    """``pystatsd status``'s sink table: name → its cells."""
    table = status.split("\nSINK ", 1)[1].splitlines()[1:]
    return {cells[0]: cells[1:] for cells in (row.split() for row in table) if cells}


def test_two_file_sinks_and_a_console_by_name_each_get_every_aggregate_through_a_reload_of_one() -> None:
    pipeline = Pipeline(flush_interval=1.0)
    audit, audit_after = pipeline.dir / "audit.jsonl", pipeline.dir / "audit-after.jsonl"
    pipeline.config["forwarders"] = {
        "file": {"path": str(pipeline.out_path)},  # the original form: the key is the kind
        "audit": {"type": "file", "path": str(audit)},
        "shown": {"type": "console"},
    }
    pipeline.save_config()
    try:
        pipeline.start()
        # RUNNING is a second after the spawn; a loaded machine's receiver binds later, and a datagram
        # sent before is refused by the kernel (NoPorts), counted nowhere the test can see.
        wait_for(lambda: f"Listening on udp://127.0.0.1:{pipeline.statsd_port} " in pipeline.log("receiver"), 20,
                 "the receiver to listen")
        with SteadyTraffic(pipeline.statsd_port, LOAD, every_secs=0.004, max_secs=60) as traffic:
            wait_for(lambda: per_key(lines(audit))[0], 10, "the audit file to get aggregates")
            rows = sink_rows(pipeline.pystatsd("status").stdout)
            assert sorted(rows) == ["audit", "file", "shown"], rows
            pipeline.config["forwarders"]["audit"]["path"] = str(audit_after)
            pipeline.save_config()
            reloaded = pipeline.pystatsd("reload")
            assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
            assert f"forwarders.audit.path: {str(audit)!r} -> {str(audit_after)!r}" in reloaded.stdout
            assert "forwarders.file" not in reloaded.stdout and "forwarders.shown" not in reloaded.stdout
            wait_for(lambda: per_key(lines(audit_after))[0], 10, "audit's new file to get aggregates")
        sent = dict(traffic.sent)
        # Everything sent, in the untouched sink and across the changed one's two files.
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: per_key(lines(pipeline.out_path)) == (sent, sent)
                     and per_key(lines(audit) + lines(audit_after)) == (sent, sent), 15, "both sinks to hold all sent")
        losses = pipeline.counted_losses()
        assert per_key(lines(pipeline.out_path)) == (sent, sent), losses
        assert per_key(lines(audit) + lines(audit_after)) == (sent, sent), losses
        assert losses == {}  # nothing dropped, lost or refused anywhere, self-metrics say
        assert "Sinks after the reload: audit, file, shown (sink audit changed)" in pipeline.log("forwarder")
        # Each sink's row counts every aggregate: the same flushes went to all three.
        wait_for(lambda: len({row["delivered"] for row in pipeline.sink_figures().values()}) == 1, 10,
                 "the three sinks to have delivered alike")
        figures = pipeline.sink_figures()
        assert sorted(figures) == ["audit", "file", "shown"]
        assert all((row["dropped"], row["failing"], row["removed"]) == ({}, None, False) for row in figures.values())
        pipeline.stop()
        # Line for line, self-metrics included: each aggregate once in each sink's files, none twice.
        written, audited = collections.Counter(lines(pipeline.out_path)), collections.Counter(
            lines(audit) + lines(audit_after))
        assert written == audited and max(written.values()) == 1
        delivered = {json.loads(line)["tags"]["sink"] for line in written
                     if json.loads(line)["name"] == "pystatsd.forwarder.delivered"}
        assert delivered == {"audit", "file", "shown"}
    finally:
        if (pipeline.run_dir / "supervisord.pid").exists():
            pipeline.stop()
        pipeline.cleanup()
