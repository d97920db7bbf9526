"""bench/tap_cost.py: its part of bench/RESULTS.md from made-up runs (nothing started), and once at a tiny size
against a real pipeline (make bench runs it at full size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, tap_cost
from bench.tap_cost import NO_TAP, TOP, TURNS, TurnRun
from harness.paths import REPO

META = {"date": "2026-12-05 11:00 UTC", "commit": "abc1234", "command": ".venv/bin/python -m bench.tap_cost",
        "rate": 150_000.0, "duration": 4.0, "runs": 2, "load_average_before": (1.0, 2.0, 3.0),
        "load_average_after": (1.5, 2.0, 3.0)}


def run(turn: str, round_: int, cpu: float, received: int = 600_000) -> TurnRun:
    return TurnRun(turn, round_, 600_000, received, 0, 149_900.0, cpu / 3, cpu)


RUNS = [run(NO_TAP, 1, 2.0), run("received", 1, 2.4), run(TOP, 1, 2.1, received=594_000),
        run(NO_TAP, 2, 3.0), run("received", 2, 2.6), run(TOP, 2, 2.3)]


def test_the_section_has_a_row_per_turn_with_its_medians_and_its_cost_over_no_tap() -> None:
    lines = tap_cost.section(META, RUNS)
    assert (lines[0], lines[1], lines[-1]) == (tap_cost.BEGIN, tap_cost.TITLE, tap_cost.END)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| with")]
    assert rows == [
        "| no tap (the headline's pipeline) | 2 | 149,900 | 1,200,000 of 1,200,000 (0.00 %) | 0 | 0.83 | 2.50 |  |",
        "| one tap, `--where received` | 2 | 149,900 | 1,200,000 of 1,200,000 (0.00 %) | 0 | 0.83 | 2.50 "
        "| +0.00 (+0 %) |",
        "| `pystatsd top` asking | 2 | 149,900 | 1,194,000 of 1,200,000 (0.50 %) | 0 | 0.73 | 2.20 | -0.30 (-12 %) |",
    ]
    text = "\n".join(lines)
    # the no-tap turn is what bench/run.py's headline measures: the report says so
    assert "as it runs for the headline figures of bench/run.py" in text
    assert "2.50 CPU-s per million metrics (runs from 2.00 to 3.00)" in text
    assert "the most with one watcher: one tap, `--where received`, +0.00 (+0 %)" in text


def test_the_section_replaces_only_its_own_part_of_the_report(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    run_part = f"{report.BEGIN}\nthe sweep\n{report.END}"
    out.write_text(f"# Benchmark results\n\n{run_part}\n\n## Notes\n\nhand-written\n")
    tap_cost.write_section(out, tap_cost.section(META, RUNS))
    first = out.read_text()
    # no part of its own yet: it goes at the end, the rest as it was
    assert first.startswith(f"# Benchmark results\n\n{run_part}\n\n## Notes\n\nhand-written\n\n{tap_cost.BEGIN}\n")
    assert first.endswith(f"{tap_cost.END}\n")
    out.write_text(first + "\n### By hand\n\nthe A/B\n")
    tap_cost.write_section(out, tap_cost.section({**META, "commit": "def5678"}, RUNS[:1]))
    second = out.read_text()
    assert second.count(tap_cost.BEGIN) == second.count(tap_cost.END) == 1
    assert "commit def5678" in second and "commit abc1234" not in second
    assert second.startswith(f"# Benchmark results\n\n{run_part}\n\n## Notes\n\nhand-written\n\n{tap_cost.BEGIN}\n")
    assert second.endswith(f"{tap_cost.END}\n\n### By hand\n\nthe A/B\n")


@pytest.mark.e2e
def test_tap_cost_at_a_tiny_size_takes_in_every_metric_in_every_turn(tmp_path: Path) -> None:
    out, saved = tmp_path / "RESULTS.md", tmp_path / "tap_cost.json"
    result = subprocess.run([sys.executable, "-m", "bench.tap_cost", "--runs", "1", "--rate", "5000", "--duration",
                             "1", "--out", str(out), "--json", str(saved)],
                            cwd=REPO, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(saved.read_text())["runs"]
    assert sorted(each["turn"] for each in runs) == sorted(TURNS)
    for each in runs:
        assert each["sent"] > 0 and each["received"] == each["sent"] and each["kernel_drops"] == 0, each
    text = out.read_text()
    assert text.startswith(tap_cost.BEGIN) and text.endswith(f"{tap_cost.END}\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| with")]
    assert [row.split(" | ")[0] for row in rows] == [f"| {tap_cost.turn_label(turn)}" for turn in TURNS]
