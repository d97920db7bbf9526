"""Planned restarts under steady traffic: exact totals, and no series twice for one interval.

A restart must not show in what users store: a consumer that keeps the last point per series and
timestamp (InfluxDB) or drops re-sent ids must see the same as if nothing had been restarted.
"""

from __future__ import annotations

import collections
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.traffic import SteadyTraffic
from harness.wait import WaitTimeout, wait_for

pytestmark = pytest.mark.fault

#: Series of both kinds on both shards: a counter and a timer per key, each with a tag.
KEYS = [f"k{i}" for i in range(8)]
LOAD = {key: f"rs.c:1|c|#key:{key}\nrs.t:{i}|ms|#key:{key},unit:ms" for i, key in enumerate(KEYS)}


def traffic(pipeline: Pipeline) -> SteadyTraffic[str]:
    return SteadyTraffic(pipeline.statsd_port, LOAD, every_secs=0.004, max_secs=120)


def sleep_until_phase(interval: float, phase: float) -> None:
    """Until ``phase`` (0..1) of the next interval."""
    now = time.time()
    time.sleep((now // interval + 1 + phase) * interval - now)


def records(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [a for a in pipeline.aggregates() if a["name"] in ("rs.c", "rs.t")]


def settled(check: Callable[[], bool], timeout: float) -> None:
    """Wait up to ``timeout`` for ``check``; the assertion after it says what differs if it never held."""
    with contextlib.suppress(WaitTimeout):
        wait_for(check, timeout, "the aggregates to settle")


def twice(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(name, tags, timestamp) that came more than once."""
    seen = collections.Counter((a["name"], tuple(sorted(a["tags"].items())), a["timestamp"]) for a in found)
    return [key for key, n in seen.items() if n > 1]


def per_key(found: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    counters: dict[str, float] = collections.Counter()
    timers: dict[str, float] = collections.Counter()
    for a in found:
        if a["name"] == "rs.c":
            counters[a["tags"]["key"]] += a["value"]
        else:
            timers[a["tags"]["key"]] += a["stats"]["count"]
    return counters, timers


def test_every_shard_restarted_at_the_start_middle_and_end_of_an_interval() -> None:
    with Pipeline(flush_interval=2.0) as pipeline:
        with traffic(pipeline) as load:
            for phase in (0.02, 0.5, 0.93):
                for shard in (0, 1):
                    sleep_until_phase(pipeline.flush_interval, phase)
                    pipeline.ctl("restart", f"aggregator:aggregator-{shard}", check=True)
            wait_for(pipeline.all_running, 20, "every stage RUNNING again")
            time.sleep(1.0)
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        logs = {shard: pipeline.log(f"aggregator-{shard}") for shard in (0, 1)}
        # Each stopping shard paused the receiver, so nothing was on the way when it unbound.
        assert per_key(records(pipeline)) == (sent, sent), (pipeline.counted_losses(), logs)
        assert twice(records(pipeline)) == []
        for log in logs.values():
            assert log.count("Handed ") == 3 and log.count("Took over from the last instance") == 3, log
            assert log.count("Receivers paused in") == 3 and "(1 of 1 heard from lately)" in log, log


def pystatsd(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_BIN / "pystatsd", *args, "-c", str(pipeline.config_path), "--run-dir",
                           str(pipeline.run_dir)], capture_output=True, text=True, timeout=60, env=pipeline.env)


def test_a_receiver_restarted_in_place_keeps_its_sockets_and_loses_nothing() -> None:
    # UDP on both listeners and a TCP connection that stays open across the restarts, mid-line too.
    pipeline = Pipeline(flush_interval=2.0)
    tcp_port = free_port()
    pipeline.config["listeners"].append(f"tcp://127.0.0.1:{tcp_port}")
    pipeline.save_config()
    with pipeline:
        pid = pipeline.status()["receiver"][1]
        stream = socket.create_connection(("127.0.0.1", tcp_port))
        with traffic(pipeline) as load:
            for _ in range(3):
                time.sleep(1.0)
                stream.sendall(b"rs.tcp:1|c\nrs.tcp:")  # the second line's end comes after the restart
                result = pystatsd(pipeline, "restart", "receiver")
                assert result.returncode == 0, result.stderr
                assert f"receiver restarted in place (pid {pid}" in result.stdout
                stream.sendall(b"2|c\n")
            time.sleep(1.0)
        stream.close()
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        assert per_key(records(pipeline)) == (sent, sent)
        settled(lambda: sum(a["value"] for a in pipeline.series("rs.tcp")) == 9, 5)
        assert sum(a["value"] for a in pipeline.series("rs.tcp")) == 9
        assert pipeline.status()["receiver"][1] == pid
        log = pipeline.log("receiver")
        assert log.count("Restarted in place: took over 3 listeners") == 3, log
        drops = [a["value"] for a in pipeline.series("pystatsd.receiver.kernel_drops")]
        assert sum(drops) == 0


def test_a_receiver_restarted_in_place_hands_on_what_its_unixgram_reader_held() -> None:
    # The unixgram listener's reader thread holds what it read until the receiver takes it; a restart
    # in place replaces the process image, so the receiver must take it all first. A blocking sender
    # waits out the restart instead of being refused: every datagram it sent must arrive.
    folder = Path(tempfile.mkdtemp(prefix="psr"))
    pipeline = Pipeline(flush_interval=2.0)
    pipeline.config["listeners"].append(f"unixgram://{folder}/dsd.sock")
    pipeline.save_config()
    sent = 0
    stopping = threading.Event()

    def send() -> None:
        nonlocal sent
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.connect(str(folder / "dsd.sock"))
            while not stopping.is_set() and sent < 200_000:
                for _ in range(50):
                    sender.send(b"rs.uds:1|c")
                    sent += 1
                time.sleep(0.001)

    try:
        with pipeline:
            sender = threading.Thread(target=send)
            sender.start()
            try:
                for _ in range(3):
                    time.sleep(1.0)
                    result = pystatsd(pipeline, "restart", "receiver")
                    assert result.returncode == 0, result.stderr
                time.sleep(0.5)
            finally:
                stopping.set()
                sender.join()
            settled(lambda: sum(a["value"] for a in pipeline.series("rs.uds")) == sent, 15)
            assert sum(a["value"] for a in pipeline.series("rs.uds")) == sent
            assert pipeline.log("receiver").count("Restarted in place: took over 3 listeners") == 3
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_forwarder_restarted_under_traffic() -> None:
    # Each restart begins just before an interval edge, when every shard's flush is on its way.
    with Pipeline(flush_interval=1.0) as pipeline:
        with traffic(pipeline) as load:
            for _ in range(3):
                sleep_until_phase(1.0, 0.9)
                result = pystatsd(pipeline, "restart", "forwarder")
                assert result.returncode == 0, result.stderr
                assert result.stdout.splitlines()[-1] == "forwarder restarted"
            time.sleep(1.0)
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        assert per_key(records(pipeline)) == (sent, sent)
        assert twice(records(pipeline)) == []
        shards = pipeline.shards
        assert pipeline.log("forwarder").count(f"({shards} of {shards})") == 3


def test_a_reload_refuses_a_bad_config_and_names_what_waits_for_a_restart() -> None:
    with Pipeline(flush_interval=2.0) as pipeline:
        before = pipeline.status()
        pipeline.config["percentiles"] = [50, 99.9]
        pipeline.config["flush_intervall"] = 5
        pipeline.save_config()
        refused = pystatsd(pipeline, "reload")
        assert refused.returncode == 78
        assert "flush_intervall: unknown key (did you mean 'flush_interval'?)" in refused.stderr
        assert "nothing was reloaded: the running config is kept" in refused.stderr
        assert pipeline.status() == before
        del pipeline.config["flush_intervall"]
        pipeline.config["flush_interval"] = 5
        pipeline.save_config()
        done = pystatsd(pipeline, "reload")
        assert done.returncode == 0, done.stderr
        assert "percentiles: [50.0, 90.0, 95.0, 99.0] -> [50.0, 99.9]" in done.stdout
        assert "flush_interval: 2.0 -> 5.0 (waits for the next pystatsd run)" in done.stdout
        # The same processes: a reload restarts nothing (the receiver restarted in place).
        assert {name: pid for name, (_, pid) in pipeline.status().items()} == \
            {name: pid for name, (_, pid) in before.items()}
        # Each stage reloaded; that a shard applies it from the next interval on, the open one ending
        # as it began, is proven in-process (tests/unit/test_shard_loop.py).
        for program in ("aggregator-0", "forwarder", "receiver"):
            assert "flush_interval changed (2.0 -> 5.0); it applies at the next pystatsd run" in \
                pipeline.log(program), program


def test_a_config_with_a_problem_restarts_nothing() -> None:
    with Pipeline(flush_interval=1.0) as pipeline:
        before = pipeline.status()
        pipeline.config["bind_prot"] = 1
        pipeline.save_config()
        refused = pystatsd(pipeline, "restart", "receiver")
        assert refused.returncode == 78
        assert "bind_prot: unknown key (did you mean 'bind_port'?)" in refused.stderr
        # A SIGHUP from elsewhere: the receiver checks the config before it restarts in place.
        pipeline.ctl("signal", "HUP", "receiver", check=True)
        wait_for(lambda: "Reload refused, the running config is kept: bind_prot" in pipeline.log("receiver"), 10,
                 "the receiver to refuse")
        assert pipeline.status() == before
        pipeline.wait_interval_start()
        pipeline.send("still.c:1|c", pipeline.statsd_port)
        assert [a["value"] for a in pipeline.wait_series("still.c", settle=False)] == [1.0]


#: Gauges set once before the reshards and never again (names spread over every ring's shards).
STILL_GAUGES = {f"rs.g{i}": float(i) for i in range(8)}


def ring_changes(pipeline: Pipeline) -> str:
    """What the stages logged of the reshards: each ring's shards log to their group's files
    (aggregator-0.log, aggregator-of-4-0.log, ...), the receiver its switches."""
    words = ("Carried", "Adopted", "No gauges carried", "Flushing every", "Loaded config", "Stopped", "overran",
             "Switched")
    return "\n".join(f"{log.stem}: {line}" for log in sorted((pipeline.run_dir / "log").glob("*.log"))
                     if log.stem.startswith(("aggregator", "receiver"))
                     for line in log.read_text(errors="replace").splitlines() if any(word in line for word in words))


def test_reshard_2_to_4_to_3_under_traffic() -> None:
    with Pipeline(flush_interval=1.0) as pipeline:
        for name, value in STILL_GAUGES.items():
            pipeline.send(f"{name}:{value}|g", pipeline.statsd_port)
        pipeline.send("rs.delta:10|g", pipeline.statsd_port)
        with traffic(pipeline) as load:
            time.sleep(1.0)
            for shards in (4, 3):
                result = pystatsd(pipeline, "reshard", str(shards))
                assert result.returncode == 0, result.stdout + result.stderr
                assert f"{shards} shards from " in result.stdout
                running = sorted(name.split(":")[-1] for name, (state, _) in pipeline.status().items()
                                 if ":aggregator-" in name and state == "RUNNING")
                assert running == [f"aggregator-{k}" for k in range(shards)]
            # A change to a gauge whose value the new ring only has from the old one.
            pipeline.send("rs.delta:+5|g", pipeline.statsd_port)
            time.sleep(1.5)
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        assert per_key(records(pipeline)) == (sent, sent)
        assert twice(records(pipeline)) == []
        # Every gauge in every interval from its first to the last one flushed, once, with its value.
        gauges = [a for a in pipeline.aggregates() if a["name"] in STILL_GAUGES or a["name"] == "rs.delta"]
        assert twice(gauges) == [], (twice(gauges), ring_changes(pipeline))
        last = max(a["timestamp"] for a in records(pipeline))
        for name, value in STILL_GAUGES.items():
            stamps = sorted(a["timestamp"] for a in gauges if a["name"] == name and a["timestamp"] <= last)
            assert stamps == list(range(stamps[0], last + 1)), (name, stamps, ring_changes(pipeline))
            assert {a["value"] for a in gauges if a["name"] == name} == {value}
        assert max((a for a in gauges if a["name"] == "rs.delta"), key=lambda a: a["timestamp"])["value"] == 15.0
        assert "Switched from 2 shards to 4" in pipeline.log("receiver")
        assert "Switched from 4 shards to 3" in pipeline.log("receiver")
        again = pystatsd(pipeline, "reshard", "3")
        assert (again.returncode, again.stdout.strip()) == (0, "already 3 shards: nothing to do")


def shard_processes(pipeline: Pipeline) -> list[str]:
    """The running shards as supervisorctl names them (group:process)."""
    return sorted(name for name, (state, _) in pipeline.status().items()
                  if ":aggregator-" in name and state == "RUNNING")


def test_reshard_under_the_repo_s_own_supervisord_conf() -> None:
    """`supervisord -c supervisord.conf` (the repo's file, not one pystatsd run wrote) reshards as
    pystatsd run's instance does, and a start after it runs the new count."""
    with Pipeline(flush_interval=1.0, repo_conf=True) as pipeline:
        with traffic(pipeline) as load:
            time.sleep(1.0)
            result = pystatsd(pipeline, "reshard", "3")
            assert result.returncode == 0, result.stdout + result.stderr
            assert "3 shards from " in result.stdout
            assert shard_processes(pipeline) == [f"aggregator-of-3:aggregator-{k}" for k in range(3)]
            time.sleep(1.5)
        sent = dict(load.sent)
        settled(lambda: per_key(records(pipeline)) == (sent, sent), 15)
        assert per_key(records(pipeline)) == (sent, sent), pipeline.counted_losses()
        assert twice(records(pipeline)) == []
        assert "Switched from 2 shards to 3" in pipeline.log("receiver")
        shown = pystatsd(pipeline, "status", "--json")
        processes = json.loads(shown.stdout)["processes"]
        assert {name: p["state"] for name, p in processes.items() if name.startswith("aggregator")} == \
            {f"aggregator-{k}": "RUNNING" for k in range(3)}, shown.stdout + shown.stderr
        # Started again from the same file: the count the reshard left, as pystatsd run starts it.
        pipeline.ctl("shutdown")
        wait_for(lambda: not (pipeline.run_dir / "supervisord.pid").exists(), 60, "supervisord to exit")
        pipeline.shards = 3
        pipeline.start()
        assert shard_processes(pipeline) == [f"aggregator-of-3:aggregator-{k}" for k in range(3)]
        # RUNNING is 1 s alive: healthy is every stage listening and flushing.
        wait_for(lambda: pystatsd(pipeline, "status").returncode == 0, 30, "the pipeline to be healthy again")
        pipeline.wait_interval_start()
        pipeline.send("after.c:1|c\nafter.c:2|c", pipeline.statsd_port)
        assert [a["value"] for a in pipeline.wait_series("after.c")] == [3.0]
