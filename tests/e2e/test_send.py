"""``pystatsd send``: lines as written, through the client library's sender, to a running instance."""

from __future__ import annotations

import subprocess

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline

pytestmark = pytest.mark.e2e


def send(pipeline: Pipeline, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([VENV_BIN / "pystatsd", "send", "-c", str(pipeline.config_path), *args], input=stdin,
                          capture_output=True, text=True, timeout=30, env=pipeline.env)


def test_send_reaches_the_configured_port_or_the_one_given() -> None:
    with Pipeline(shards=1) as pipeline:
        pipeline.wait_interval_start()
        # The config's bind_port by default; --port for another listener; stdin when no line is given.
        first = send(pipeline, "page.views:1|c|#page:home", "page.views:2|c|#page:home")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"sent 2 lines to 127.0.0.1:{pipeline.port} (udp)"
        other = send(pipeline, "--port", str(pipeline.statsd_port), "page.views:4|c|#page:home")
        assert other.returncode == 0, other.stderr
        piped = send(pipeline, stdin='{"metric_name": "page.views", "metric_type": "counter", "count": 8, '
                                     '"page": "home"}\n')
        assert piped.returncode == 0, piped.stderr
        aggregates = pipeline.wait_series("page.views", page="home")
        assert sum(a["value"] for a in aggregates) == 15


def test_send_says_what_is_wrong() -> None:
    pipeline = Pipeline(shards=1)  # not started: nothing here needs a running instance
    try:
        assert send(pipeline).returncode == 78
        assert "nothing to send" in send(pipeline).stderr
        bad_port = send(pipeline, "--port", "70000", "a:1|c")
        assert bad_port.returncode == 78 and "--port: must be between 1 and 65535" in bad_port.stderr
        unresolvable = send(pipeline, "--host", "no-such-host.invalid", "a:1|c")
        assert unresolvable.returncode == 1 and "cannot send to no-such-host.invalid" in unresolvable.stderr
    finally:
        pipeline.sock.close()
        pipeline.cleanup()
