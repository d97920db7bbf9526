"""The flush benchmark's smoke run (python -m bench.flush --smoke): nothing lost, and a row per shard and interval."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.paths import REPO

pytestmark = pytest.mark.e2e


def test_flush_smoke_loses_nothing_and_reports_every_flush() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.flush", "--smoke"],
                            cwd=REPO, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    # one row per shard (2) and interval (1 warm-up, 2 measured), under the table's header and rule
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 6, result.stdout
    assert "loss: none" in result.stdout, result.stdout
