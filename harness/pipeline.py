"""The real pipeline under supervisord, for tests and the benchmark: the repo's own supervisord.conf,
paths moved to a temp dir.

Only the run directory (sockets, logs, supervisord's own files) moves; the programs, their
options and the shard-count variable are the ones the repo ships.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.paths import REPO, VENV_BIN
from harness.ports import free_port
from harness.server_guard import refuse_in_serverless_test
from harness.wait import WaitTimeout, wait_for
from stages.common import supervisor_rpc
from stages.common.strict import STRICT_ENV
from stages.control.supervisord_conf import REPO_TEMPLATE, render_supervisord_conf
from stages.receiver.listeners.kernel_drops import udp_socket_table
from stages.rundir.figures import read_all


class Pipeline:
    """One running copy of pystatsd with a file sink, on free ports, in its own short temp dir."""

    def __init__(self, config: dict[str, Any] | None = None, shards: int = 2, flush_interval: float = 1.0,
                 test_defaults: bool = True, extra_receivers: int = 0, exec_prefix: list[str] | None = None,
                 repo_conf: bool = False) -> None:
        """``config`` is laid over the test defaults (free ports, 1 s interval, a file sink), or used
        as it is with ``test_defaults=False``. ``exec_prefix`` starts supervisord through another
        command (``HostNetwork.exec_prefix``: in a network namespace). With ``repo_conf`` supervisord
        runs the repo's supervisord.conf itself, as the README's ``supervisord -c supervisord.conf``
        does: a copy beside a run/ of its own, with the repo's virtualenv (and its counts)."""
        # At construction, not start(): a test may start it through `pystatsd run` instead.
        refuse_in_serverless_test("a pipeline")
        # Short: ipc socket paths must stay under ~100 characters.
        self.dir = Path(tempfile.mkdtemp(prefix="pst"))
        self.run_dir = self.dir / "run"
        self.run_dir.mkdir(mode=0o700)
        (self.run_dir / "log").mkdir(mode=0o700)
        self.out_path = self.dir / "aggregates.jsonl"
        self.port = free_port()
        self.statsd_port = free_port()
        self.shards = shards
        self.extra_receivers = extra_receivers
        self.flush_interval = flush_interval
        self.exec_prefix = list(exec_prefix or [])
        base: dict[str, Any] = {
            "bind_address": "127.0.0.1",
            "bind_port": self.port,
            "listeners": [f"udp://127.0.0.1:{self.statsd_port}"],
            "flush_interval": flush_interval,
            "forwarders": {"file": {"path": str(self.out_path)}},
        } if test_defaults else {}
        base.update(config or {})
        self.config = base
        #: A fleet tier (an ``input:`` section) runs no receiver.
        self.receivers = "input" not in self.config
        self.config_path = self.dir / "pystatsd.yaml"
        self.save_config()
        if repo_conf:
            self._copy_repo_conf()
        else:
            # Where pystatsd run writes it, private.
            self.conf_path = self.run_dir / "supervisord.conf"
            self.conf_path.touch(mode=0o600)
            self.conf_path.write_text(self._supervisord_conf())
        # Strict: a stage that emits a self-metric or publishes figures not as declared fails (stages.common.strict).
        self.env = dict(os.environ, PYSTATSD_CONFIG=str(self.config_path), **{STRICT_ENV: "1"})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def save_config(self) -> None:
        """Write ``self.config`` (after a test changed it) to the file the stages read at start."""
        self.config_path.write_text(yaml.safe_dump(self.config))

    def _supervisord_conf(self) -> str:
        return render_supervisord_conf(REPO_TEMPLATE.read_text(), REPO, sys.executable, self.run_dir,
                                       {"shards": self.shards, "extra_receivers": self.extra_receivers},
                                       logs_to_terminal=False, receivers=self.receivers)

    def _copy_repo_conf(self) -> None:
        """The repo's file as it is: its %(here)s is this pipeline's dir, whose .venv is the repo's."""
        if (self.shards, self.extra_receivers, self.receivers) != (2, 0, True):
            raise ValueError("the repo's supervisord.conf runs 2 shards and one receiver")
        self.conf_path = self.dir / "supervisord.conf"
        shutil.copyfile(REPO_TEMPLATE, self.conf_path)
        (self.dir / ".venv").symlink_to(REPO / ".venv")

    def start(self, wait_running: bool = True) -> Pipeline:
        subprocess.run([*self.exec_prefix, VENV_BIN / "supervisord", "-c", self.conf_path], env=self.env, check=True)
        if wait_running:
            try:
                # 60 s: on a machine busy with other tests a start takes seconds of CPU per stage.
                wait_for(lambda: self.all_running(), 60, "every stage to be RUNNING")
            except WaitTimeout as timeout:
                raise WaitTimeout(f"{timeout}\n{self.start_report()}") from None
        return self

    def start_report(self) -> str:
        """What a start that did not finish got to: each program's state and whether it read its
        config, the receiver's sockets, and the last lines of every log."""
        states = self.status()
        lines = [f"{name}: {state} pid {pid}, config loaded: {self.loaded_config(name.split(':')[-1])}"
                 for name, (state, pid) in sorted(states.items())] or ["supervisord does not answer"]
        receiver = next((pid for name, (_, pid) in states.items() if "receiver" in name), None)
        if self.receivers and receiver:
            lines.append(f"receiver listening on every socket: {self.listening(receiver)}")
        for log in sorted((self.run_dir / "log").glob("*.log")):
            lines.append(f"--- {log.name}, last lines:\n" + "\n".join(log.read_text().splitlines()[-8:]))
        return "\n".join(lines)

    def __enter__(self) -> Pipeline:
        """Start it (every stage RUNNING); leaving the block stops it and removes its files."""
        try:
            return self.start()
        except BaseException:
            # A start that failed half way may have left supervisord and some stages running.
            self.ctl("shutdown")
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    def ctl(self, *args: str, check: bool = False) -> str:
        result = subprocess.run([VENV_BIN / "supervisorctl", "-c", self.conf_path, *args],
                                env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            # What a program that failed to start said last is what explains the failure.
            failed = re.findall(r"^(?:\S+:)?(\S+): ERROR", result.stdout, re.MULTILINE)
            tails = "".join(f"\n--- {name}.log, last lines:\n" + "\n".join(self.log(name).splitlines()[-15:])
                            for name in failed)
            raise AssertionError(f"supervisorctl {' '.join(args)} failed: {result.stdout}{result.stderr}{tails}")
        return result.stdout

    def status(self) -> dict[str, tuple[str, int | None]]:
        """Program name (``group:name`` as supervisorctl shows it) → (state, pid); {} when supervisord
        does not answer. Asked over its socket in this process: the waits poll it every tenth of a
        second, and a supervisorctl process each time would take the CPU the stages start with."""
        infos = supervisor_rpc.call(self.run_dir, "getAllProcessInfo") or []
        return {(info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"):
                (info["statename"], info["pid"] or None) for info in infos}

    def all_running(self) -> bool:
        """Every stage RUNNING, and the receiver bound to every UDP port and Unix socket it listens on:
        RUNNING means a second alive, and on a busy machine a receiver binds later, so what a client
        sent then would find no socket (a datagram lost, a connect refused)."""
        states = self.status()
        expected = self.shards + 1 + (1 + self.extra_receivers if self.receivers else 0)
        return (len(states) == expected and all(state == "RUNNING" for state, _ in states.values())
                and (not self.receivers or self.listening(next(pid for name, (_, pid) in states.items()
                                                               if "receiver" in name)))
                and all(self.loaded_config(name.split(":")[-1]) for name in states))

    def loaded_config(self, program: str) -> bool:
        """Whether ``program`` has read its config (as its log says, where it has one here): on a busy
        machine a stage may not have by the time it is RUNNING, and would read a config the test
        rewrites next (a reload test's bad one) as its first."""
        path = self.run_dir / "log" / f"{program}.log"
        return not path.exists() or "Loaded config" in path.read_text()

    def listening(self, receiver: int | None) -> bool:
        """Whether the receiver (pid) is bound to every port and Unix socket of the config, as the
        kernel lists them in its network namespace (a host's, for a pipeline run in one)."""
        listeners: list[str] = self.config.get("listeners", [])
        udp_ports = {int(url.rsplit(":", 1)[1]) for url in listeners if url.startswith("udp://")}
        if "bind_port" in self.config:
            udp_ports.add(int(self.config["bind_port"]))
        bound = {row.local_port for row in udp_socket_table(receiver)}
        return udp_ports <= bound and all(Path(url.split("://", 1)[1]).exists() for url in listeners
                                          if url.startswith(("unix://", "unixgram://")))

    def stop(self, sink_never_delivers: bool = False) -> None:
        """Stop every process. With ``sink_never_delivers`` the forwarder is killed once every other
        process has stopped: a graceful stop would spend its drain (up to 20 s) on a sink the test
        made undeliverable, and what that sink holds is not under test."""
        pids = {name: pid for name, (_, pid) in self.status().items() if pid} if sink_never_delivers else {}
        self.ctl("shutdown")
        forwarder = pids.pop("forwarder", None)
        if forwarder:
            wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids.values()), 60,
                     "every process but the forwarder to stop")
            try:
                os.kill(forwarder, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pid_file = self.run_dir / "supervisord.pid"
        wait_for(lambda: not pid_file.exists(), 60, "supervisord to exit")
        self.sock.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, payload: bytes | str, port: int | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.sock.sendto(data, ("127.0.0.1", port or self.port))

    def wait_interval_start(self) -> None:
        """Sleep until just after an interval edge, so what is sent next lands in one interval."""
        interval = self.flush_interval
        phase = time.time() % interval
        if not 0.05 * interval <= phase <= 0.4 * interval:
            time.sleep((interval - phase) + 0.05 * interval)

    def aggregates(self) -> list[dict[str, Any]]:
        """Every aggregate the file sink has written whole: a line it is writing has no newline yet."""
        if not self.out_path.exists():
            return []
        return [json.loads(line) for line in whole_lines(self.out_path.read_text()) if line]

    def shards_flushed_after(self, stamp: float) -> bool:
        """Whether every shard has flushed an interval later than ``stamp`` (each shard's self-metrics
        carry ``shard=<K>``): a shard's flushes arrive in order, so then all of ``stamp``'s are in."""
        later = {a["tags"].get("shard") for a in self.aggregates() if a["timestamp"] > stamp}
        return later >= {str(shard) for shard in range(self.shards)}

    def series(self, name: str, **tags: str) -> list[dict[str, Any]]:
        """Every aggregate of ``name`` whose tags include ``tags``."""
        return [a for a in self.aggregates()
                if a["name"] == name and all(a["tags"].get(k) == v for k, v in tags.items())]

    def wait_series(self, name: str, timeout: float = 10.0, settle: bool = True, **tags: str) -> list[dict[str, Any]]:
        """The aggregates of a series once one has arrived (plus one more interval for stragglers)."""
        wait_for(lambda: self.series(name, **tags), timeout, f"an aggregate of {name} {tags}")
        if settle:
            time.sleep(self.flush_interval + 0.5)
        return self.series(name, **tags)

    def loose_modes(self) -> dict[str, str]:
        """Every file, socket and directory of the run directory (and the file sink's output) that
        others than its owner may read or write: path → its mode, as ls shows it."""
        paths = [self.run_dir, *self.run_dir.rglob("*"), self.out_path]
        return {str(path): stat.filemode(path.lstat().st_mode) for path in paths
                if path.exists() and path.lstat().st_mode & 0o077}

    def counted_losses(self) -> dict[str, float]:
        """Every loss the pipeline counted in its own metrics (self-metric and tags → sum): what an
        exact check that failed should be read with."""
        counted: dict[str, float] = {}
        for a in self.aggregates():
            if a["name"].startswith("pystatsd.") and any(word in a["name"] for word in ("lost", "drop", "refused")):
                key = f"{a['name']}{sorted(a['tags'].items())}"
                counted[key] = counted.get(key, 0) + a["value"]
        return counted

    def log(self, program: str) -> str:
        path = self.run_dir / "log" / f"{program}.log"
        return path.read_text() if path.exists() else ""

    def pystatsd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pystatsd <args>`` on this instance: its config file and its run directory."""
        return subprocess.run([VENV_BIN / "pystatsd", *args, "-c", str(self.config_path), "--run-dir",
                               str(self.run_dir)], capture_output=True, text=True, timeout=60, env=self.env)

    def sink_figures(self) -> dict[str, dict[str, Any]]:
        """Each sink's row as the forwarder published it last (what ``pystatsd status`` shows); {} before."""
        return read_all(self.run_dir).get("forwarder", {}).get("figures", {}).get("sinks", {})


def whole_lines(text: str) -> list[str]:
    """The lines of ``text`` that end in a newline: a file another process appends to may end in half a line."""
    return text.split("\n")[:-1]


def total(aggregates: list[dict[str, Any]]) -> float:
    return sum(a["value"] for a in aggregates)


def running_pipeline(config: dict[str, Any] | None = None, shards: int = 2, **options: Any) -> Iterator[Pipeline]:
    """Start a pipeline, yield it, always stop and remove it (for fixtures)."""
    with Pipeline(config, shards=shards, **options) as pipeline:
        yield pipeline


def commands_without_a_pipeline(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Each ``pystatsd`` command (its arguments) run on a pipeline's config and run directory that were never
    started: what a command says of an instance that is not running."""
    pipeline = Pipeline(flush_interval=1.0)
    try:
        return [pipeline.pystatsd(*command) for command in commands]
    finally:
        pipeline.sock.close()
        pipeline.cleanup()
