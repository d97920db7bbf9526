"""The harness under its old name, for the test files that still import it from here.

Everything lives in the top-level package ``harness`` (shared with the benchmark); import it from
there. This module goes once tests/sinks/test_*.py, tests/kafka/test_kafka_sink.py,
tests/kafka/test_kafka_delivery.py and tests/e2e/test_{status,send,debug_logging}.py import
``harness`` themselves.
"""

from __future__ import annotations

from harness import traffic
from harness.paths import REPO, VENV_BIN
from harness.pipeline import Pipeline, running_pipeline, total
from harness.ports import accepts_tcp, free_tcp_port, free_udp_port
from harness.wait import wait_for

__all__ = ["REPO", "VENV_BIN", "Pipeline", "SteadyTraffic", "accepts_tcp", "free_tcp_port", "free_udp_port",
           "running_pipeline", "total", "wait_for"]


def SteadyTraffic(pipeline: Pipeline, names: list[str], every_secs: float = 0.01,
                  max_secs: float = 300) -> traffic.SteadyTraffic[str]:
    """The old class's call (counter increments over ``names`` to ``pipeline``), as a function: new code
    calls ``traffic.SteadyTraffic(pipeline.statsd_port, traffic.counter_increments(names), ...)``."""
    return traffic.SteadyTraffic(pipeline.statsd_port, traffic.counter_increments(names), every_secs, max_secs)
