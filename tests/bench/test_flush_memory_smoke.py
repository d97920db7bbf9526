"""The flush memory measurement (python -m bench.flush_memory) at a small size: every process it measures is
reported, in its format, with every aggregate the shards flushed delivered by each sink. No server: the stages'
loops run in child processes, their sinks' destinations are loopback stand-ins that discard (no memory or time
is judged here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.flush_memory import SINKS
from harness.paths import REPO

SERIES = 400


def test_flush_memory_reports_each_process_with_every_aggregate_delivered(tmp_path: Path) -> None:
    report = tmp_path / "memory.json"
    result = subprocess.run([sys.executable, "-m", "bench.flush_memory", "--series", str(SERIES),
                             "--json", str(report)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(report.read_text())["results"]
    processes = [r["process"] for r in results]
    assert processes == ["shard 0", "shard 1", *(f"forwarder ({sink})" for sink in SINKS), "receiver"]
    shards = [r for r in results if r["process"].startswith("shard")]
    assert sum(r["series"] for r in shards) == SERIES
    flushed = sum(r["aggregates"] for r in shards)
    for r in results:
        assert r["peak_mib"] >= r["before_mib"] > 0, r
        if r["process"].startswith("forwarder"):
            assert (r["delivered"], r["dropped"]) == (flushed, 0), r
    receiver = results[-1]
    assert receiver["datagrams"] == receiver["sent"] == 2 * SERIES // 20
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Peak RSS per process, one flush of {SERIES:,} series")
    for process, line in zip(processes, lines[1:], strict=False):
        pattern = rf"  {re.escape(process)} +peak +\d+\.\d MiB  \(before the flush +\d+\.\d MiB; .*\)"
        assert re.fullmatch(pattern, line), line
    assert re.fullmatch(r"largest: .+ \d+\.\d MiB: (met|missed by \d+\.\d MiB)", lines[-1]), lines[-1]
