"""The benchmark's smoke run (bench/run.py --smoke): each system delivers exactly what was sent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.e2e


def smoke_systems() -> list[str]:
    # Etsy statsd is installed with npm on first use; without npm and node only pystatsd runs.
    return ["pystatsd", "etsy"] if shutil.which("npm") and shutil.which("node") else ["pystatsd"]


def test_bench_smoke_delivers_exactly_what_was_sent(tmp_path: Path) -> None:
    report = tmp_path / "smoke.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--systems", ",".join(smoke_systems()),
         "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = [run for point in json.loads(report.read_text())["sweep"] for run in point["runs"]]
    assert [run["system"] for run in runs] == smoke_systems()
    for run in runs:
        assert run["sent"] > 0, run
        assert run["delivered"] == run["sent"], run
