"""A sink that cannot deliver for a while, under steady traffic: what it drops is counted once, under
its own reason (never again as a loss), and what it delivers is there exactly once."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from harness.pipeline import Pipeline, total
from harness.ports import free_port
from harness.tmpfs import Filler, small_tmpfs
from harness.traffic import SteadyTraffic, counter_increments
from harness.wait import wait_for
from stages.rundir.figures import read_all

pytestmark = pytest.mark.fault

NAMES = [f"drops.c{i}" for i in range(6)]


def forwarder_figures(pipeline: Pipeline) -> dict[str, Any]:
    figures: dict[str, Any] = read_all(pipeline.run_dir).get("forwarder", {}).get("figures", {})
    return figures


def dropped(row: dict[str, Any]) -> int:
    return sum(row["dropped"].values())


class CarbonStandIn:
    """Counts the plaintext lines sent to a port, from a thread, once it is told to listen."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines = 0
        self.listener: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, name="carbon-stand-in", daemon=True)

    def listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.2)
        self.thread.start()

    def _serve(self) -> None:
        assert self.listener is not None
        while self.listener.fileno() >= 0:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.2)
                while self.listener.fileno() >= 0:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    self.lines += chunk.count(b"\n")

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.thread.join(5)


def test_a_full_buffer_drop_beside_a_healthy_sink_is_counted_once_and_never_as_a_loss() -> None:
    # The graphite sink's carbon is down: it retries its oldest flush while a 12-aggregate buffer
    # drops the flushes queued behind it (reason buffer_full), which the file sink delivered.
    carbon = CarbonStandIn(free_port())
    config = {"self_metrics_prefix": "", "forwarders": {"file": {}, "graphite": {
        "port": carbon.port, "buffer_max_aggregates": 12}}}
    pipeline = Pipeline(config)
    pipeline.config["forwarders"]["file"]["path"] = str(pipeline.out_path)
    pipeline.save_config()
    with pipeline:
        try:
            with SteadyTraffic(pipeline.statsd_port, counter_increments(NAMES), every_secs=0.005,
                               max_secs=60) as load:
                wait_for(lambda: pipeline.sink_figures().get("graphite", {}).get("dropped", {}).get(
                    "buffer_full", 0) >= 24, 30, "the graphite sink to drop some flushes")
                carbon.listen()
                wait_for(lambda: pipeline.sink_figures()["graphite"]["delivered"] > 0, 15,
                         "the graphite sink to deliver again")
            # The healthy sink has every increment; the other one each aggregate delivered or dropped.
            wait_for(lambda: total(pipeline.aggregates()) == load.total, 15, "every increment in the file")

            def settled() -> bool:
                rows = pipeline.sink_figures()
                return (rows["graphite"]["waiting"] == 0
                        and rows["file"]["delivered"] == len(pipeline.aggregates())
                        and rows["graphite"]["delivered"] + dropped(rows["graphite"]) == rows["file"]["delivered"]
                        and carbon.lines == 2 * rows["graphite"]["delivered"])  # .count and .rate of a counter

            wait_for(settled, 15, "the graphite sink to deliver or count every aggregate the file got")
            rows = pipeline.sink_figures()
            assert rows["file"]["dropped"] == {}
            assert set(rows["graphite"]["dropped"]) == {"buffer_full"}
            assert forwarder_figures(pipeline)["lost_metrics"] == 0
            assert "Lost " not in pipeline.log("forwarder")
        finally:
            carbon.close()


def test_the_file_sink_on_a_full_disk_writes_each_aggregate_once_or_counts_it_dropped() -> None:
    # Each datagram a counter of its own name: one aggregate, so the aggregates sent are the datagrams.
    datagrams = {i: f"disk.c{i}:1|c" for i in range(3000)}
    with small_tmpfs(1024 * 1024) as disk:
        config = {"self_metrics_prefix": "", "forwarders": {"file": {"path": str(disk / "aggregates.jsonl"),
                                                                     "buffer_max_aggregates": 200}}}
        pipeline = Pipeline(config)
        pipeline.out_path = disk / "aggregates.jsonl"
        filler = Filler(disk / "filler")
        with pipeline:
            with SteadyTraffic(pipeline.statsd_port, datagrams, every_secs=0.004, count=len(datagrams),
                               max_secs=60) as load:
                wait_for(lambda: len(pipeline.aggregates()) > 100, 15, "some aggregates in the file")
                # Full but for one page: each try writes part of a flush, then finds the disk full.
                filler.fill()
                filler.give_back(4096)
                wait_for(lambda: pipeline.sink_figures()["file"]["dropped"].get("buffer_full", 0) > 200, 30,
                         "the file sink to drop flushes for its full buffer")
                filler.remove()

            def settled() -> bool:
                row = pipeline.sink_figures()["file"]
                return row["waiting"] == 0 and row["delivered"] + dropped(row) == load.total

            wait_for(settled, 30, "every aggregate delivered or counted as dropped")
            written = pipeline.aggregates()  # a torn line fails here
            names = [a["name"] for a in written]
            row = pipeline.sink_figures()["file"]
            assert len(names) == len(set(names)) == row["delivered"]
            assert set(row["dropped"]) == {"buffer_full"}
            assert "No space left on device" in pipeline.log("forwarder")
            assert forwarder_figures(pipeline)["lost_metrics"] == 0
            assert "Lost " not in pipeline.log("forwarder")
