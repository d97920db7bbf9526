"""The benchmark's rate search (bench/run.py RateSearch) against systems with a known limit, no load sent."""

from __future__ import annotations

import math

from bench.results import RatePoint, RunResult
from bench.run import CLOSE_STEP, RateSearch


def run_at(rate: float, loss_pct: float, catch_up_s: float = 0.0) -> RunResult:
    sent = 1_000_000.0
    return RunResult(system="sys", per_datagram=20, target_rate=rate, shards=None, sent=sent,
                     offered_per_sec=rate, delivered=sent * (1 - loss_pct / 100), delivered_per_sec=rate,
                     elapsed=3.0, cpu_seconds={"sys": 1.0}, peak_rss_mib={"sys": 10.0}, kernel_drops=0, losses={},
                     settled=True, load="mix-20", metrics_sent=2 * sent, catch_up_s=catch_up_s)


def drive(search: RateSearch, verdict) -> list[tuple[float, int]]:
    """Runs the search to its end; ``verdict(rate, nth run)`` gives (loss %, catch-up seconds) of a run."""
    asked = []
    while (wanted := search.next()) is not None:
        rate, runs = wanted
        asked.append((rate, runs))
        point = search.points.get(rate) or RatePoint("sys", 20, rate, None, load="mix-20")
        while len(point.runs) < runs:
            point.runs.append(run_at(rate, *verdict(rate, len(point.runs))))
        search.record(point)
        assert len(asked) < 40, asked
    return asked


def limit_at(limit: float):
    return lambda rate, _: (0.0, 0.0) if rate <= limit else (5.0, 0.0)


def test_climbs_bisects_and_confirms_the_highest_pass_with_more_runs() -> None:
    search = RateSearch(100_000, 4e6, 2.0, 2, 3)
    asked = drive(search, limit_at(300_000))
    assert asked[:3] == [(100_000, 1), (200_000, 1), (400_000, 1)]
    best = search.best()
    assert 200_000 <= best <= 300_000
    assert asked[-1] == (best, 3)
    assert len(search.points[best].runs) == 3


def test_a_failed_confirmation_moves_the_result_down() -> None:
    # 283,000 passes once by luck and fails the two confirmation runs: the pass below it is confirmed instead
    lucky = {283_000: iter([(0.0, 0.0), (2.0, 0.0), (2.0, 0.0)])}

    def verdict(rate: float, nth: int) -> tuple[float, float]:
        return next(lucky[rate]) if rate in lucky else limit_at(250_000)(rate, nth)

    search = RateSearch(200_000, 4e6, 2.0, 2, 3)
    drive(search, verdict)
    assert not search.points[283_000].passed
    assert search.best() == 238_000
    assert len(search.points[238_000].runs) == 3


def test_a_system_that_falls_behind_fails_without_losing_anything() -> None:
    # no loss anywhere, but above 150,000/s it works off a queue for seconds after the load
    search = RateSearch(100_000, 4e6, 2.0, 1, 1)
    drive(search, lambda rate, _: (0.0, 0.1 if rate <= 150_000 else 3.0))
    assert search.best() == 141_000


def test_a_close_start_steps_by_root_two() -> None:
    search = RateSearch(500_000, 4e6, CLOSE_STEP, 1, 1)
    asked = drive(search, limit_at(600_000))
    assert [rate for rate, _ in asked[:2]] == [500_000, round(500_000 * math.sqrt(2), -3)]


def test_fixed_rates_are_measured_with_every_run() -> None:
    search = RateSearch(0, 4e6, 2.0, 2, 3, fixed=[100_000, 200_000])
    assert drive(search, limit_at(150_000)) == [(100_000, 3), (200_000, 3)]
