"""Stops and crashes under steady traffic: what is delivered, and that the pipeline heals itself."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline, total
from harness.traffic import SteadyTraffic, counter_increments
from harness.wait import wait_for
from stages.common.sharding import shard_for
from stages.receiver.listeners.kernel_drops import udp_socket_table

pytestmark = pytest.mark.fault


#: Counter names owned by both shards; SteadyTraffic sends about 200 increments a second over them.
NAMES = [f"fault.c{i}" for i in range(6)]


def traffic(pipeline: Pipeline) -> SteadyTraffic[str]:
    return SteadyTraffic(pipeline.statsd_port, counter_increments(NAMES), every_secs=0.005, max_secs=120)


def kill_9(pipeline: Pipeline, program: str) -> float:
    """SIGKILL ``program``, wait until supervisord has it RUNNING again; how long that took. Then until
    every stage runs and listens (``all_running``): on a busy machine a receiver RUNNING may not be bound
    yet, and what the test sent then would be lost where nothing can count it."""
    victim = pipeline.status()[program][1]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: pipeline.status()[program][0] == "RUNNING" and pipeline.status()[program][1] != victim, 5,
             f"{program} to come back")
    healed = time.monotonic() - killed_at
    wait_for(pipeline.all_running, 15, "every stage running and listening")
    return healed


def delivered(pipeline: Pipeline, name: str) -> float:
    return total(pipeline.series(name))


def test_shutdown_mid_interval_and_start_again_loses_nothing() -> None:
    with Pipeline(flush_interval=2.0) as pipeline:
        pipeline.wait_interval_start()
        with traffic(pipeline) as load:
            time.sleep(2.5)
        # Mid-interval, with batches and a partial interval in flight in every stage.
        pipeline.ctl("shutdown")
        wait_for(lambda: not (pipeline.run_dir / "supervisord.pid").exists(), 60, "supervisord to exit")
        for program in ("receiver", "forwarder", "aggregator-0", "aggregator-1"):
            assert "SIGKILL" not in pipeline.log(program)
        pipeline.start()
        with traffic(pipeline) as second:
            time.sleep(2.5)
        both = {name: load.sent[name] + second.sent[name] for name in NAMES}
        wait_for(lambda: all(delivered(pipeline, n) == both[n] for n in NAMES), 15,
                 "every increment from both runs")
        supervisord_log = (pipeline.run_dir / "supervisord.log").read_text()
        assert "SIGKILL" not in supervisord_log
        assert supervisord_log.count("stopped: forwarder (exit status 0)") == 1


def logged_losses(pipeline: Pipeline, program: str, shard: int | None = None) -> int:
    """Metrics a stage's log says were lost (the ledger's own words)."""
    pattern = r"Lost (\d+) metrics \(\d+ batches from \S+\)" + (f" of shard {shard}:" if shard is not None else "")
    return sum(int(n) for n in re.findall(pattern, pipeline.log(program)))


def test_stop_all_in_one_pass_mid_interval_loses_nothing() -> None:
    # `stop all` signals every stage at once, unlike shutdown's ordered stop: the forwarder must
    # still wait for the shards' final flushes.
    with Pipeline(flush_interval=2.0) as pipeline:
        pipeline.wait_interval_start()
        with traffic(pipeline) as load:
            time.sleep(2.5)
        pipeline.ctl("stop", "all", check=True)
        assert all(state == "STOPPED" for state, _ in pipeline.status().values())
        pipeline.ctl("start", "all", check=True)
        wait_for(pipeline.all_running, 20, "every stage RUNNING again")
        wait_for(lambda: all(delivered(pipeline, n) == load.sent[n] for n in NAMES), 15, "every increment")
        assert "SIGKILL" not in (pipeline.run_dir / "supervisord.log").read_text()


def test_kill_9_of_a_shard_heals_within_2s_and_the_ledger_counts_its_loss_exactly() -> None:
    # Without self-metrics only the traffic flows, so the ledger's count is the traffic's loss.
    with Pipeline({"self_metrics_prefix": ""}) as pipeline:
        pipeline.wait_interval_start()
        with traffic(pipeline) as load:
            time.sleep(1.5)
            assert kill_9(pipeline, "aggregator:aggregator-1") <= 2.5
            time.sleep(2.5)
        survivors = [n for n in NAMES if shard_for(n, 2) == 0]
        victims = [n for n in NAMES if shard_for(n, 2) == 1]
        assert survivors and victims
        wait_for(lambda: all(delivered(pipeline, n) == load.sent[n] for n in survivors), 10,
                 "the other shard's names, complete")
        # The killed shard lost at most its open interval (1 s at ~33 increments/s per name) and what
        # was queued inside it, and the forwarder's ledger says exactly how much.
        time.sleep(pipeline.flush_interval + 0.5)
        sent = sum(load.sent[n] for n in victims)
        got = sum(delivered(pipeline, n) for n in victims)
        lost = logged_losses(pipeline, "forwarder", shard=1) + logged_losses(pipeline, "aggregator-1")
        assert 0 < sent - got <= 100 * len(victims)
        assert got + lost == sent
        assert logged_losses(pipeline, "forwarder", shard=0) == 0
        assert pipeline.status()["receiver"][0] == "RUNNING"


def test_kill_9_of_the_forwarder_shards_hold_their_flushes_and_the_ledger_counts_the_rest() -> None:
    with Pipeline({"self_metrics_prefix": ""}) as pipeline:
        pipeline.wait_interval_start()
        with traffic(pipeline) as load:
            # Killed late in an interval, when it has handed on the last flush: the next flushes,
            # due while it restarts, wait in the shards' queues for the new forwarder.
            time.sleep(1.5)
            killed_at = time.time()
            kill_9(pipeline, "forwarder")
            time.sleep(1.0)
            stopped_at = time.time()
        # Whatever the dead forwarder held is in the ledger of the new one; the rest arrives.
        wait_for(lambda: sum(delivered(pipeline, n) for n in NAMES) + logged_losses(pipeline, "forwarder")
                 == load.total, 15, "every increment delivered or counted as lost")
        # Delivered, not only counted: every interval that ended after the kill and before the traffic
        # stopped (an aggregate's timestamp is its interval's end) was flushed to no forwarder or a
        # restarting one, and each name of it arrived. The dead forwarder can only have held intervals
        # that ended before; the interval the traffic stopped in may hold no line of some name.
        interval = pipeline.flush_interval
        after_kill = [edge * interval for edge in range(math.floor(killed_at / interval) + 1,
                                                        math.floor(stopped_at / interval) + 1)]
        assert after_kill
        for name in NAMES:
            stamps = {a["timestamp"] for a in pipeline.series(name)}
            assert set(after_kill) <= stamps, f"{name}: intervals lost after the kill: {set(after_kill) - stamps}"
        assert pipeline.status()["forwarder"][0] == "RUNNING"


def unread_bytes(port: int) -> int:
    """Bytes waiting in the kernel's queues of the UDP sockets on ``port``."""
    return sum(row.rx_queue_bytes for row in udp_socket_table() if row.local_port == port)


def killed_predecessors(pipeline: Pipeline) -> list[tuple[int, int]]:
    """(metrics held unsent, datagrams read but not parsed) of each killed receiver, as its successor logged them."""
    found = re.findall(r"A killed predecessor \(pid \d+\) held (\d+) metrics unsent and (\d+) datagrams read",
                       pipeline.log("receiver"))
    return [(int(held), int(unparsed)) for held, unparsed in found]


def test_kill_9_of_the_receiver_with_open_batches_the_ledger_counts_its_loss_exactly() -> None:
    # The window leaves 1 s after its first metric at the latest (batch_max_age_ms at its most) or at
    # the 2 s interval's edge: killed 0.5 s into an interval, the receiver surely holds it open.
    with Pipeline({"self_metrics_prefix": "", "batch_max_age_ms": 1000}, flush_interval=2.0) as pipeline:
        sent = 0
        for _ in range(3):
            pipeline.wait_interval_start()
            with traffic(pipeline) as load:
                time.sleep(0.4)
            sent += load.total
            # UDP sent while no receiver runs is lost where nothing can count it: the traffic pauses,
            # and the kill waits until the receiver has read every datagram the kernel held for it.
            wait_for(lambda: unread_bytes(pipeline.statsd_port) == 0, 5, "the receiver to read every datagram")
            kill_9(pipeline, "receiver")
        # Planned restarts, in place (SIGHUP) and a stop and start, count nothing.
        restarted = subprocess.run([VENV_BIN / "pystatsd", "restart", "receiver", "-c", str(pipeline.config_path),
                                    "--run-dir", str(pipeline.run_dir)], capture_output=True, text=True,
                                   timeout=60, env=pipeline.env)
        assert restarted.returncode == 0, restarted.stderr
        pipeline.ctl("restart", "receiver", check=True)
        wait_for(pipeline.all_running, 15, "the receiver restarted and listening")
        with traffic(pipeline) as load:
            time.sleep(0.4)
        sent += load.total

        def accounted() -> float:
            # A datagram the killed receiver had read but not parsed held one metric (the log counts them).
            unparsed = sum(datagrams for _, datagrams in killed_predecessors(pipeline))
            return sum(delivered(pipeline, n) for n in NAMES) + logged_losses(pipeline, "forwarder") + unparsed

        wait_for(lambda: accounted() == sent, 15, "every increment delivered or counted as lost")
        time.sleep(pipeline.flush_interval + 0.5)
        assert accounted() == sent
        # Each killed receiver held its open window (at most 0.4 s of traffic, about 80 datagrams),
        # and the planned restarts counted nothing.
        held = killed_predecessors(pipeline)
        assert len(held) == 3 and all(0 < metrics <= 100 for metrics, _ in held), held
        assert logged_losses(pipeline, "forwarder") == sum(metrics for metrics, _ in held)
