"""The README's quick start as a newcomer meets it: `make run` in a clean copy of the repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.paths import REPO
from harness.wait import WaitTimeout, wait_for

# The install (a virtualenv, the C parts compiled) takes 30 s on a quiet machine, minutes on a busy one.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

#: The ports etc/pystatsd.yaml listens on.
QUICK_START_PORTS = (5090, 8125)


def clean_copy(destination: Path) -> Path:
    """The repo's tracked files (as they are in the work tree), without its .venv, run/ or builds."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def test_make_run_installs_only_the_daemon_quietly_and_prints_the_user_s_aggregates(short_tmp_path: Path) -> None:
    copy = clean_copy(short_tmp_path / "pystatsd")
    # What `make run` installs, alone: no test or lint tool, and nothing said but errors.
    install = subprocess.run(["make", "-s", "install"], cwd=copy, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (install.stdout + install.stderr).strip() == ""
    installed = {path.name for path in (copy / ".venv" / "bin").iterdir()}
    assert {"pystatsd", "supervisord"} <= installed
    assert not {"pytest", "ruff", "mypy"} & installed
    # A config with problems: every one printed at once, nothing started.
    config = copy / "etc" / "pystatsd.yaml"
    shipped = config.read_text()
    config.write_text(shipped.replace(
        "bind_port: 5090", "bind_port: 5090\nflush_intervall: 10\npercentiles: [50, 200]"))
    refused = subprocess.run(["make", "-s", "run"], cwd=copy, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "flush_intervall: unknown key" in refused.stderr and "percentiles" in refused.stderr
    assert not (copy / "run" / "supervisord.pid").exists()
    config.write_text(shipped)
    run = subprocess.Popen(["make", "-s", "run"], cwd=copy, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode() for line in run.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: sum("entered RUNNING state" in line for line in lines) == 4, 30, "every stage RUNNING")
        # RUNNING is a second alive; on a busy machine the receiver binds its port later, and a line sent
        # before that is refused by the kernel. What the user sees when it listens is this line.
        wait_for(lambda: any(f"Listening on udp://127.0.0.1:{QUICK_START_PORTS[0]}" in line for line in lines), 30,
                 "the receiver to say it listens")
        sent = subprocess.run([copy / ".venv" / "bin" / "pystatsd", "send", "page.views:1|c|#page:home"],
                              cwd=copy, capture_output=True, text=True, timeout=30)
        assert sent.stdout == f"sent 1 line to 127.0.0.1:{QUICK_START_PORTS[0]} (udp)\n"
        try:
            wait_for(lambda: any(line.startswith("{") for line in lines), 25, "the aggregate on the terminal")
        except WaitTimeout as missing:
            # Another process bound to the port with SO_REUSEPORT (another pystatsd) takes a share of its datagrams.
            bound = subprocess.run(["ss", "-Huanp", f"sport = :{QUICK_START_PORTS[0]}"], capture_output=True, text=True)
            raise AssertionError(f"{missing}; bound to the port: {bound.stdout}; printed: {''.join(lines)}") from None
        time.sleep(1)  # the rest of that flush
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C on make run's terminal: make and the daemon get it
        code = run.wait(timeout=60)
        reader.join(60)  # until supervisord and every stage, which hold the pipe too, have exited
        if run.stdout is not None:
            run.stdout.close()
    assert code in (0, -signal.SIGINT)
    assert not reader.is_alive()
    assert sum(bool(re.search(r" INFO stages\.\S+: Stopped", line)) for line in lines) == 4
    (aggregate,) = [json.loads(line) for line in lines if line.startswith("{")]
    assert {k: aggregate[k] for k in ("name", "type", "tags", "interval", "value", "rate")} == {
        "name": "page.views", "type": "counter", "tags": {"page": "home"}, "interval": 10, "value": 1.0, "rate": 0.1}
    # Every other line is supervisord's or a stage's log line; no warning from the install or root.
    others = [line for line in lines if not line.startswith("{")]
    assert others[0] == f"{copy / 'etc' / 'pystatsd.yaml'}: OK\n"
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in others[1:]), others
    assert not [line for line in others if "running as root" in line]
