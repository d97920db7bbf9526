"""A reload that removes a sink while its destination is away: what it held is counted, never lost silently.

(A reload that changes a sink hands what it held to the new settings: tests/sinks/test_influxdb_sink.py,
against a real InfluxDB.)
"""

from __future__ import annotations

import time

import pytest

from harness.pipeline import Pipeline, total
from harness.ports import free_tcp_port
from harness.wait import wait_for
from stages.common.lifecycle import FORWARDER_STOP

pytestmark = pytest.mark.fault

#: As many as the user saw lost when debug_mode was turned on while Kafka was unreachable.
HELD = 69


def test_debug_mode_turned_on_by_reload_counts_what_the_unreachable_kafka_held_as_dropped_removed() -> None:
    pipeline = Pipeline(flush_interval=1.0)
    # No self-metrics until the reload: what waits for Kafka is then exactly the user's aggregates.
    pipeline.config["self_metrics_prefix"] = ""
    pipeline.config["forwarders"]["kafka"] = {"kafka_broker": f"127.0.0.1:{free_tcp_port()}", "kafka_topic": "t"}
    pipeline.save_config()
    with pipeline:
        pipeline.wait_interval_start()
        pipeline.send("\n".join(f"rb.c{i}:{i + 1}|c" for i in range(HELD)), pipeline.statsd_port)
        wait_for(lambda: pipeline.sink_figures().get("kafka", {}).get("waiting") == HELD, 20,
                 f"the {HELD} aggregates waiting for the unreachable Kafka")
        pipeline.config["debug_mode"] = True
        pipeline.config["self_metrics_prefix"] = "pystatsd."
        pipeline.save_config()
        reloaded_at = time.monotonic()  # before: the drain cannot have started earlier
        reloaded = pipeline.pystatsd("reload")
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        # The removed sink drains on its own thread: the other sinks and the flush loop go on meanwhile.
        pipeline.send("rb.after:1|c", pipeline.statsd_port)
        wait_for(lambda: pipeline.series("rb.after"), 10, "a flush after the reload in the file sink")
        assert time.monotonic() - reloaded_at < FORWARDER_STOP.sink_drain_secs
        figures = pipeline.sink_figures()
        assert "kafka" in figures, f"the removed sink's row is gone, and what it held with it: {figures}"
        assert figures["kafka"]["waiting"] == HELD
        # Its drain (20 s, a stop's), plus a Kafka connect attempt that may be under way then.
        kafka = wait_for(lambda: (row := pipeline.sink_figures()["kafka"])["waiting"] == 0 and row,
                         FORWARDER_STOP.sink_drain_secs + 15, "the removed Kafka sink's drain to end")
        assert (kafka["delivered"], kafka["dropped"], kafka["removed"]) == (0, {"removed": HELD}, True)
        dropped = pipeline.wait_series("pystatsd.forwarder.dropped", sink="kafka", reason="removed")
        assert total(dropped) == HELD
        table = pipeline.pystatsd("status").stdout
        (row,) = [line.split() for line in table.splitlines() if line.startswith("kafka ")]
        assert row[:5] == ["kafka", "0", "0", str(HELD), f"(removed={HELD})"] and row[-1] == "removed", table
        log = pipeline.log("forwarder")
        assert f"Sink kafka, removed by a reload, did not deliver {HELD} aggregates within its drain" in log, log
        # Sent: HELD aggregates. The file sink delivered them all; Kafka delivered 0 and counted HELD.
        delivered = {a["name"]: a["value"] for a in pipeline.aggregates() if a["name"].startswith("rb.c")}
        assert delivered == {f"rb.c{i}": i + 1 for i in range(HELD)}
