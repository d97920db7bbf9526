"""A stage that cannot start ends its tries and says why; `pystatsd run` finds what it can before it starts."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.wait import wait_for
from stages.common.lifecycle import EXIT_CONFIG

pytestmark = pytest.mark.e2e

#: supervisord.conf's startretries: a stage that fails at once is started this many times plus one.
START_TRIES = 3 + 1


def spawns(pipeline: Pipeline, program: str) -> int:
    return len(re.findall(rf"spawned: '{program}'", (pipeline.run_dir / "supervisord.log").read_text()))


def status(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_BIN / "pystatsd", "status", "-c", pipeline.config_path, "--run-dir", pipeline.run_dir],
                          capture_output=True, text=True, timeout=30)


def held_udp_port() -> socket.socket:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    return holder


@pytest.mark.parametrize("startup_delay", [0.0, 1.5], ids=["fails-at-once", "fails-after-startsecs"])
def test_a_receiver_whose_port_is_taken_is_not_restarted_in_a_loop(startup_delay: float) -> None:
    """However long a stage takes to find it cannot start (a loaded machine, past supervisord's
    startsecs), it is tried at most startretries + 1 times, and `pystatsd status` says why."""
    holder = held_udp_port()
    pipeline = Pipeline({"bind_port": holder.getsockname()[1]})
    if startup_delay:
        conf = pipeline.conf_path.read_text()
        pipeline.conf_path.write_text(re.sub(r"^command=(\S+) (-m stages\.receiver .*)$",
                                             rf"command=/bin/sh -c 'sleep {startup_delay}; exec \1 \2'",
                                             conf, count=1, flags=re.MULTILINE))
    try:
        pipeline.start(wait_running=False)
        wait_for(lambda: pipeline.status().get("receiver", ("",))[0] in ("FATAL", "EXITED"), 30,
                 "the receiver to be given up on")
        time.sleep(3)  # what a storm would show: more spawns after the give-up
        assert 1 <= spawns(pipeline, "receiver") <= START_TRIES
        assert pipeline.status()["receiver"][0] in ("FATAL", "EXITED")
        shown = status(pipeline)
        assert shown.returncode == 1
        port = holder.getsockname()[1]
        assert (f"receiver: cannot start: Cannot start: [Errno 98] cannot listen on udp://127.0.0.1:{port}: "
                "Address already in use") in shown.stdout
        # The other stages run on.
        assert all(state == "RUNNING" for name, (state, _) in pipeline.status().items() if name != "receiver")
    finally:
        holder.close()
        pipeline.stop()
        pipeline.cleanup()


def test_a_shard_with_a_bad_config_is_given_up_on_and_status_names_the_key() -> None:
    pipeline = Pipeline()
    pipeline.start()
    try:
        pipeline.config["flush_intervall"] = 5
        pipeline.save_config()
        pipeline.ctl("restart", "aggregator:aggregator-0")
        wait_for(lambda: pipeline.status()["aggregator:aggregator-0"][0] in ("FATAL", "EXITED"), 30,
                 "aggregator-0 given up on")
        shown = status(pipeline)
        assert shown.returncode == 1
        assert "aggregator-0: cannot start: Config error in" in shown.stdout
        assert "flush_intervall: unknown key" in shown.stdout
    finally:
        pipeline.stop()
        pipeline.cleanup()


def run_command(config: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_BIN / "pystatsd", "run", "-c", config, "--run-dir", run_dir],
                          capture_output=True, text=True, timeout=30)


def test_run_names_a_taken_port_and_its_holder_and_starts_nothing(tmp_path: Path) -> None:
    udp = held_udp_port()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", free_port()))
    tcp.listen()
    udp_port, tcp_port = udp.getsockname()[1], tcp.getsockname()[1]
    free = free_port()
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {udp_port}\nlisteners: ['tcp://127.0.0.1:{free}']\n"
                      f"health_address: '127.0.0.1:{tcp_port}'\n"
                      f"forwarders: {{file: {{path: {tmp_path / 'out.jsonl'}}}}}\n")
    run_dir = tmp_path / "run"
    try:
        started = time.monotonic()
        result = run_command(config, run_dir)
        assert time.monotonic() - started < 10
    finally:
        udp.close()
        tcp.close()
    assert result.returncode == EXIT_CONFIG
    pid = os.getpid()
    assert f"udp://127.0.0.1:{udp_port}: address already in use (held by pid {pid}: " in result.stderr
    assert f"tcp://127.0.0.1:{tcp_port}: address already in use (held by pid {pid}: " in result.stderr
    assert f"tcp://127.0.0.1:{free}" not in result.stderr
    assert not (run_dir / "supervisord.pid").exists()


def test_run_refuses_a_run_directory_an_instance_already_runs_in(tmp_path: Path) -> None:
    with Pipeline() as pipeline:
        result = run_command(pipeline.config_path, pipeline.run_dir)
        assert result.returncode == EXIT_CONFIG
        assert f"{pipeline.run_dir}: an instance of pystatsd already runs there" in result.stderr
        assert pipeline.all_running()


def test_run_refuses_a_run_directory_others_may_write(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chmod(run_dir, 0o777)
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {free_port()}\n")
    result = run_command(config, run_dir)
    assert result.returncode == EXIT_CONFIG
    assert f"run directory {run_dir} must belong to this user and not be writable by group or others" in result.stderr
    assert list(run_dir.iterdir()) == []


def test_run_takes_the_configs_run_dir_as_its_stages_do_and_refuses_another_run_dir(tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    configured.mkdir()
    os.chmod(configured, 0o777)  # refused: its message names the directory pystatsd run chose
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {free_port()}\nrun_dir: {configured}\n")
    result = subprocess.run([VENV_BIN / "pystatsd", "run", "-c", config], capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_CONFIG
    assert f"run directory {configured} must belong to this user" in result.stderr
    other = tmp_path / "other"
    result = run_command(config, other)
    assert result.returncode == EXIT_CONFIG
    assert (f"--run-dir {other} and the config's run_dir ({configured}) differ: the stages would use run_dir; "
            "give one of them") in result.stderr
    assert not other.exists()


def test_run_exits_78_with_each_reason_when_no_stage_can_start(tmp_path: Path) -> None:
    """Every stage fails after pystatsd run's own checks passed (the shard's and the forwarder's locks
    held, the receiver's Unix socket path a plain file): supervisord gives up on each, and pystatsd run
    exits 78 naming each reason instead of staying up with nothing running."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    not_a_socket = tmp_path / "metrics.sock"
    not_a_socket.write_text("")
    config = tmp_path / "pystatsd.yaml"
    config.write_text(f"bind_port: {free_port()}\nlisteners: ['unix://{not_a_socket}']\n"
                      f"forwarders: {{file: {{path: {tmp_path / 'out.jsonl'}}}}}\n")
    locks = [(run_dir / name).open("w") for name in ("forwarder.lock", "shard-0-of-1.lock")]
    for lock in locks:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    proc = subprocess.Popen([VENV_BIN / "pystatsd", "run", "-c", config, "--run-dir", run_dir, "--shards", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # Four tries each, 1 + 2 + 3 s of supervisord's backoff between them: well within a minute.
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for lock in locks:
            lock.close()
    assert proc.returncode == EXIT_CONFIG, stderr
    given_up = stderr[stderr.index("pystatsd gives up: no stage is left running (3 ended)"):].splitlines()
    assert given_up[1:4] == [
        f"  receiver: cannot start: Cannot start: [Errno 98] cannot listen on unix://{not_a_socket}: "
        "Address already in use",
        f"  aggregator-0: cannot start: Another shard-0-of-1 is already running with run directory {run_dir}",
        f"  forwarder: cannot start: Another forwarder is already running with run directory {run_dir}",
    ]
    assert not (run_dir / "supervisord.pid").exists()  # supervisord itself is gone, and its stages
    assert run_dir.stat().st_mode & 0o777 == 0o700  # made private by pystatsd run
