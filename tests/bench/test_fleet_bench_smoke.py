"""The fleet benchmark's smoke run: it measures both figures and says whether the target was met."""

from __future__ import annotations

import re
import subprocess
import sys

from harness.paths import REPO


def test_fleet_bench_reports_the_edge_cost_and_the_merge_rate() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.fleet", "--hosts", "3", "--series", "200",
                             "--edge-series", "500", "--rounds", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"edge, 500 series: partials \d+ ms .* json records \d+ ms", result.stdout), result.stdout
    assert re.search(r"fleet, 3 hosts x 200 series = 600 partials: [\d,]+ partials/s", result.stdout), result.stdout
    assert re.search(r"target .*: (met|missed)", result.stdout), result.stdout
