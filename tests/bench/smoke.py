"""The benchmark's smoke run as the tests run it: ``python -m bench.run --smoke`` on some systems, its JSON read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.paths import REPO


def run_smoke(systems: list[str], tmp_path: Path, timeout: float = 100) -> dict[str, Any]:
    """What ``bench.run --smoke --systems ...`` measured (its --json), once it exited 0."""
    report = tmp_path / "smoke.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--systems", ",".join(systems), "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    saved: dict[str, Any] = json.loads(report.read_text())
    return saved


def runs_of(saved: dict[str, Any]) -> list[dict[str, Any]]:
    return [run for point in saved["sweep"] for run in point["runs"]]
