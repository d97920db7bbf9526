"""The benchmark's smoke run (python -m bench.run --smoke): each system delivers exactly what was sent of the
realistic mix, counter increments plus timer samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import peers
from bench.results import RunResult
from bench.run import smoke_verdict
from tests.bench.smoke import run_smoke, runs_of

pytestmark = pytest.mark.e2e


def smoke_systems() -> list[str]:
    """pystatsd, Etsy statsd (installed with npm on first use, in seconds, where npm and node are), and the
    Go peers only where a build is cached already: Telegraf takes minutes to build (make bench does)."""
    systems = ["pystatsd"]
    if shutil.which("npm") and shutil.which("node"):
        systems.append("etsy")
    systems += [name for name in ("telegraf", "statsd_exporter") if peers.PEERS[name].installed()]
    return systems


def test_bench_smoke_delivers_exactly_what_was_sent(tmp_path: Path) -> None:
    runs = runs_of(run_smoke(smoke_systems(), tmp_path))
    assert [run["system"] for run in runs] == smoke_systems()
    for run in runs:
        assert run["sent"] > 0, run
        # Exact, but for a peer whose socket the kernel overflowed on a busy machine (pystatsd is exact).
        assert smoke_verdict(RunResult(**run), peer=run["system"] in peers.PEERS) != "MISMATCH", run
        # the mix: counters and timers both counted, and every line a datagram of its own run
        assert run["metrics_sent"] > run["sent"], run
        assert not run["ring_wrapped"], run


def test_bench_smoke_with_rules_accounts_for_every_line(tmp_path: Path) -> None:
    # pystatsd-rules: the mix through bench/rules.yaml, which renames every timer, drops the counters
    # bench.c9* and merges the series of others; what is delivered under the new names and what the
    # receiver counted as dropped by a rule add up to exactly what was sent.
    [run] = runs_of(run_smoke(["pystatsd-rules"], tmp_path))
    assert run["system"] == "pystatsd-rules"
    assert run["delivered"] == run["sent"] > 0, run
    # each outcome happened: timers delivered under bench.timer, counters dropped and counted, and the
    # counters no rule matched (the rest) delivered as sent
    assert run["renamed"] > 0 and run["rule_dropped"] > 0, run
    assert run["renamed"] + run["rule_dropped"] < run["sent"], run
    assert not run["ring_wrapped"], run
