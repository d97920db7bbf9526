"""``pystatsd status``'s table, from a report as collect() makes it."""

from __future__ import annotations

from typing import Any

from stages.control.status import render

NOW = 1000.0


def record(schema: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {"stage": "x", "schema": schema, "pid": 1, "updated": NOW - 1, "figures": figures}


def report() -> dict[str, Any]:
    return {"run_dir": "/run/pystatsd", "healthy": True, "reasons": [],
            "processes": {"receiver": {"state": "RUNNING", "pid": 10, "uptime_secs": 5}},
            "stages": {
                "receiver": record("receiver", {
                    "listeners": ["udp://127.0.0.1:8125"], "datagrams": 12, "metrics": 1500, "kernel_drops": 0,
                    "bad_lines": {"no_value": 2, "bad_type": 1}, "dropped_shard_full": {}, "connections": 0,
                    "connections_refused": {}, "connections_closed": {}, "rule_dropped": 0,
                    "rule_unmatched": 0, "rules": {}, "relay": {}}),
                "aggregator-0": record("aggregator", {"shard": 0, "aggregates": 3, "metrics": 1500, "gauges": 0,
                                                      "held_flushes": 0, "dropped_flushes": 0, "bad_messages": {},
                                                      "busiest": {"interval": 10, "series_limit": 10_000,
                                                                  "names": [], "tags": {}}}),
                "forwarder": record("forwarder", {
                    "sinks": {"file": {"delivered": 23, "waiting": 0, "dropped": {}, "errors": 0, "failing": None,
                                       "removed": False}},
                    "lost_metrics": 0, "lost_flushes": 0, "bad_messages": 0})}}


def test_bad_lines_are_shown_by_reason_beside_their_total() -> None:
    (line,) = [line for line in render(report(), NOW).splitlines() if line.startswith("receiver")]
    assert line.endswith("datagrams 12  metrics 1,500  kernel_drops 0  bad_lines 3 (bad_type=1, no_value=2)")


def test_each_stage_s_figures_in_metrics() -> None:
    lines = render(report(), NOW).splitlines()
    assert lines[0] == "pystatsd at /run/pystatsd: healthy"
    (shard,) = [line for line in lines if line.startswith("aggregator-0")]
    assert shard.endswith("metrics 1,500  aggregates 3  gauges 0  held_flushes 0")
    (forwarder,) = [line for line in lines if line.startswith("forwarder")]
    assert forwarder.endswith("lost_metrics 0  lost_flushes 0")
    assert lines[-1].split() == ["file", "23", "0", "0", "0", "ok"]


def test_a_sink_a_reload_removed_shows_what_it_dropped_by_reason() -> None:
    stages = report()["stages"]
    stages["forwarder"]["figures"]["sinks"]["kafka"] = {"delivered": 0, "waiting": 0, "dropped": {"removed": 69},
                                                       "errors": 14, "failing": None, "removed": True}
    stages["forwarder"]["figures"]["sinks"]["influxdb"] = {
        "delivered": 3, "waiting": 2, "dropped": {"buffer_full": 1, "removed": 4}, "errors": 1,
        "failing": "InfluxDB at http://127.0.0.1:1 unreachable", "removed": True}
    lines = render({**report(), "stages": stages}, NOW).splitlines()
    assert lines[-4].split() == ["SINK", "DELIVERED", "WAITING", "DROPPED", "ERRORS", "STATE"]
    assert lines[-3].split() == ["file", "23", "0", "0", "0", "ok"]
    assert lines[-2].split() == ["influxdb", "3", "2", "5", "(buffer_full=1,", "removed=4)", "1", "removed,",
                                 "draining", "(failing:", "InfluxDB", "at", "http://127.0.0.1:1", "unreachable)"]
    assert lines[-1].split() == ["kafka", "0", "0", "69", "(removed=69)", "14", "removed"]


def test_metrics_the_rules_dropped_are_shown_when_there_are_any() -> None:
    status = report()
    status["stages"]["receiver"]["figures"].update(rule_dropped=1234)
    (line,) = [line for line in render(status, NOW).splitlines() if line.startswith("receiver")]
    assert line.endswith("bad_lines 3 (bad_type=1, no_value=2)  rule_dropped 1,234")
    status["stages"]["receiver"]["figures"].update(rule_dropped=0)
    (line,) = [line for line in render(status, NOW).splitlines() if line.startswith("receiver")]
    assert "rule_dropped" not in line


def test_stream_connections_show_what_the_limits_refused_and_closed() -> None:
    status = report()
    status["stages"]["receiver"]["figures"].update(
        connections=256, connections_refused={"peer_limit": 3}, connections_closed={"idle_timeout": 2, "peer_limit": 5})
    (line,) = [line for line in render(status, NOW).splitlines() if line.startswith("receiver")]
    assert line.endswith("connections 256  connections_refused 3 (peer_limit=3)  "
                         "connections_closed 7 (idle_timeout=2, peer_limit=5)")


def test_each_relay_destination_shows_what_went_and_what_was_dropped_by_reason() -> None:
    status = report()
    status["stages"]["receiver"]["figures"]["relay"] = {
        "127.0.0.1:8125": {"datagrams": 1200, "dropped": {}},
        "10.0.0.9:8125": {"datagrams": 3, "dropped": {"unreachable": 40, "buffer_full": 2}}}
    (line,) = [line for line in render(status, NOW).splitlines() if line.startswith("receiver")]
    assert line.endswith("relay 127.0.0.1:8125 1,200 datagrams, dropped lines 0  "
                         "relay 10.0.0.9:8125 3 datagrams, dropped lines 42 (buffer_full=2, unreachable=40)")
