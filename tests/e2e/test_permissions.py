"""What pystatsd writes is its user's alone, however it was started: sockets, logs, the ledger,
hand-offs, figures, the config copies and a file sink's aggregates (issue: foreground runs
ignored supervisord's umask=077)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from harness.paths import REPO
from harness.pipeline import Pipeline
from harness.wait import wait_for

pytestmark = pytest.mark.e2e


def exercise(pipeline: Pipeline) -> None:
    """Make every stage write what it writes: aggregates, figures, the ledger, a shard's hand-off."""
    pipeline.send("perm.c:1|c", pipeline.statsd_port)
    pipeline.wait_series("perm.c", settle=False)
    pipeline.ctl("restart", "aggregator:aggregator-0", check=True)
    wait_for(lambda: (pipeline.run_dir / "forwarder-ledger.json").exists(), 10, "the ledger")


def test_as_a_daemon() -> None:
    with Pipeline() as pipeline:
        exercise(pipeline)
        # supervisord opens its own log before it daemonizes and applies umask=077: that one file has
        # the starting shell's mode, inside the private run directory.
        assert pipeline.loose_modes().keys() <= {str(pipeline.run_dir / "supervisord.log")}
        assert pipeline.run_dir.stat().st_mode & 0o077 == 0


def test_in_the_foreground_as_make_run_starts_it() -> None:
    (recipe,) = re.findall(r"^run: .*\n\t(.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    pipeline = Pipeline()
    command = (recipe.replace("$(VENV)", str(REPO / ".venv")).replace("etc/pystatsd.yaml", str(pipeline.config_path))
               + f" --run-dir {pipeline.run_dir}")
    # Started from a shell whose umask lets everyone read: what make run inherits from a login shell.
    proc = subprocess.Popen(["sh", "-c", command], env=pipeline.env, preexec_fn=lambda: os.umask(0o022),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(pipeline.all_running, 30, "every stage RUNNING")
        exercise(pipeline)
        assert pipeline.loose_modes() == {}
    finally:
        pipeline.stop()
        proc.wait(timeout=60)
        pipeline.cleanup()
