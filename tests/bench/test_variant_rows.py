"""The report's rows of pystatsd's variants (bench/report.py), and how bench/destinations.py adds up what a
server stored, from made-up measurements: nothing started."""

from __future__ import annotations

from bench import report
from bench.destinations import cumulative_total, interval_total
from bench.results import HEADLINE, LOADS, BenchResults, DestinationCheck, RatePoint, RunResult


def point(system: str, rate: float, cpu: float) -> RatePoint:
    sent = 1_000_000.0
    run = RunResult(system=system, per_datagram=20, target_rate=rate, shards=None, sent=sent, offered_per_sec=rate,
                    delivered=sent, delivered_per_sec=rate, elapsed=3.0, cpu_seconds={"receiver-0": cpu},
                    peak_rss_mib={"receiver-0": 10.0}, kernel_drops=0, losses={}, settled=True, load=HEADLINE,
                    metrics_sent=sent)
    return RatePoint(system, 20, rate, None, [run], load=HEADLINE)


def test_the_sinks_and_relay_variants_each_get_a_row_beside_pystatsd_alone() -> None:
    results = BenchResults({}, sweep=[point("pystatsd", 800_000, 1.0), point("pystatsd-sinks", 600_000, 1.5),
                                      point("pystatsd-relay", 400_000, 2.0)])
    rows = report.ratio_rows(results, [LOADS[HEADLINE]])
    sinks, relay = rows[1:]
    assert sinks[0] == f"{LOADS[HEADLINE].describe()}, {report.VARIANT_ROWS['pystatsd-sinks'][0]}"
    assert relay[0] == f"{LOADS[HEADLINE].describe()}, {report.VARIANT_ROWS['pystatsd-relay'][0]}"
    assert "every new sink on" in sinks[0] and "relay" in relay[0]
    assert sinks[1:5] == ["600,000", "pystatsd alone", "800,000", "0.75×"]
    assert relay[1:5] == ["400,000", "pystatsd alone", "800,000", "0.50×"]
    # CPU-s per million metrics of each beside pystatsd's
    assert (sinks[5], sinks[6], relay[5]) == ("1.50", "1.00", "2.00")
    # and neither is taken for a peer
    assert report.best_peer(results, HEADLINE) is None


def test_what_each_server_held_is_listed_against_the_file_sink() -> None:
    checks = [DestinationCheck("pystatsd-sinks", HEADLINE, 1_000.0, {"otlp": 1_000.0, "remote write": 1_000.0}),
              DestinationCheck("pystatsd-sinks", "mix-1", 1_000.0, {"otlp": 1_000.0, "remote write": 990.0}),
              DestinationCheck("pystatsd-sinks", "mix-20-1s", 1_000.0, {}, "AssertionError: two samples at 5")]
    assert [check.exact for check in checks] == [True, False, False]
    lines = report.destination_lines(checks)
    assert lines[2] == ("- pystatsd-sinks, mix-20: the file sink 1,000; otlp 1,000, remote write 1,000: "
                        "each holds all of it.")
    assert lines[3].endswith("remote write 990: **not all of it**.")
    assert lines[4].endswith("could not be read back: AssertionError: two samples at 5")
    assert report.destination_lines([]) == []


def test_running_totals_add_up_across_a_reset_and_interval_values_simply_add() -> None:
    # a counter's running total: 3, 5, then the forwarder restarted (2 is a new total from 0), then 6
    assert cumulative_total({"a": {1: 3.0, 2: 5.0, 3: 2.0, 4: 6.0}, "b": {1: 1.0}}) == 5 + 2 + 4 + 1
    assert interval_total({"a": {1: 3.0, 2: 2.0}, "b": {7: 1.5}}) == 6.5
