"""``pystatsd capture`` and ``replay`` (issue 27, item 2): traffic captured from one running pipeline and
replayed into a second gives the same aggregates exactly; a stopped pipeline is not captured."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.paths import VENV_BIN
from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.wait import wait_for
from stages.control.capture_file import CLOSE, DATAGRAM, STREAM, CaptureReader

pytestmark = pytest.mark.e2e

#: Long enough that one interval holds all the traffic, and the replay's, from a start near its edge.
INTERVAL = 3.0
DATAGRAMS = [
    *(f"api.hits:{n}|c|#env:prod" for n in range(1, 41)),
    *(f"api.sampled:2|c|@0.5|#env:prod\napi.ms:{n * 1.5}|ms|#route:/a" for n in range(40)),
    *(f"users:u{n % 7}|s" for n in range(30)),
    "depth:10|g", "depth:+3|g", "depth:-1|g",
    *(f"size:{n}|h|#k:v" for n in range(25)),
]
#: Two connections' chunks; the second ends without a newline (its last line).
STREAMS = [[b"tcp.hits:1|c\ntcp.ms:5|ms\n", b"tcp.ms:7|ms\ntcp.users:a|s\n"],
           [b"tcp.hits:2|c\ntcp.level:4|g\n", b"tcp.ms:9|ms\ntcp.hits:3|c"]]


def with_tcp(pipeline: Pipeline) -> int:
    """A TCP listener beside the UDP one, in the config of a pipeline not yet started."""
    port = free_port()
    pipeline.config["listeners"] = [f"udp://127.0.0.1:{pipeline.statsd_port}", f"tcp://127.0.0.1:{port}"]
    pipeline.save_config()
    return port


def user_aggregates(pipeline: Pipeline) -> list[str]:
    """The traffic's aggregates (not the pipeline's own), each without its time, sorted."""
    return sorted(json.dumps({k: v for k, v in a.items() if k != "timestamp"}, sort_keys=True)
                  for a in pipeline.aggregates() if not a["name"].startswith("pystatsd."))


def send_traffic(pipeline: Pipeline, tcp_port: int) -> None:
    for datagram in DATAGRAMS:
        pipeline.send(datagram, pipeline.statsd_port)
    for chunks in STREAMS:
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as conn:
            for chunk in chunks:
                conn.sendall(chunk)
                time.sleep(0.02)  # separate reads: the capture keeps a stream's chunks as read


def started_capture(pipeline: Pipeline, path: Path, *args: str) -> subprocess.Popen[str]:
    """``pystatsd capture`` running, once it said which receiver it captures."""
    process = subprocess.Popen([VENV_BIN / "pystatsd", "capture", *args, str(path), "-c", str(pipeline.config_path),
                                "--run-dir", str(pipeline.run_dir)], stderr=subprocess.PIPE, text=True,
                               env=pipeline.env)
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith("capturing what receiver reads on udp://127.0.0.1:"), first + process.stderr.read()
    return process


def read_records(path: Path) -> tuple[list[Any], dict[str, Any]]:
    with path.open("rb") as handle:
        reader = CaptureReader(handle, str(path))
        records = list(reader.records())
        assert reader.trailer is not None
        return records, reader.trailer


def test_a_capture_replayed_into_a_second_pipeline_gives_the_same_aggregates_exactly(tmp_path: Path) -> None:
    path = tmp_path / "traffic.cap"
    first = Pipeline(shards=2, flush_interval=INTERVAL)
    first_tcp = with_tcp(first)
    with first:
        wrong = first.pystatsd("capture", "--duration", "5", "--listener", "udp://127.0.0.1:1", str(path))
        assert wrong.returncode == 1 and not path.exists()
        assert wrong.stderr.splitlines()[-1] == ("capture: no receiver listens on udp://127.0.0.1:1: --listener "
                                                 "takes one of the config's listeners")
        (tmp_path / "taken.cap").write_bytes(b"")
        taken = first.pystatsd("capture", "--duration", "5", str(tmp_path / "taken.cap"))
        assert taken.returncode == 1 and "taken.cap exists: a capture writes a new file" in taken.stderr
        capture = started_capture(first, path, "--duration", "9")
        first.wait_interval_start()
        sent_at = time.time()
        send_traffic(first, first_tcp)
        _, err = capture.communicate(timeout=30)
        assert capture.returncode == 0, err
        # A stream's payloads are what the receiver parses: its complete lines per read, then the last line.
        assert f"captured {len(DATAGRAMS) + 5 + 2} payloads" in err and "dropped" not in err and "no end" not in err
        wait_for(lambda: first.shards_flushed_after(sent_at + INTERVAL), 20, "the first pipeline's flush")
        expected = user_aggregates(first)
    assert os.stat(path).st_mode & 0o777 == 0o600
    records, trailer = read_records(path)
    assert [r.payload.decode() for r in records if r.kind == DATAGRAM] == DATAGRAMS
    streams = [r for r in records if r.kind in (STREAM, CLOSE)]
    assert [r.kind for r in streams] == [STREAM, STREAM, CLOSE, STREAM, STREAM, STREAM, CLOSE]
    assert {r.connection for r in streams[:3]} == {1} and {r.connection for r in streams[3:]} == {2}
    for number, chunks in enumerate(STREAMS, 1):
        assert b"".join(r.payload for r in streams if r.connection == number) == b"".join(chunks)
    assert (trailer["ended"], trailer["dropped"], trailer["records"]) == ("duration", 0, len(records))
    assert len(expected) > 10

    second = Pipeline(shards=2, flush_interval=INTERVAL)
    second_tcp = with_tcp(second)
    with second:
        second.wait_interval_start()
        replayed = subprocess.run([VENV_BIN / "pystatsd", "replay", str(path), "--max",
                                   "--to", f"udp://127.0.0.1:{second.statsd_port}",
                                   "--to", f"tcp://127.0.0.1:{second_tcp}"],
                                  capture_output=True, text=True, timeout=30)
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stderr.strip().startswith(f"replayed {len(DATAGRAMS)} datagrams and 5 stream chunks over 2 "
                                                  "connections")
        wait_for(lambda: user_aggregates(second) == expected, 20, "the second pipeline's aggregates to equal the "
                 f"first's; last: {user_aggregates(second)} vs {expected}")
        assert user_aggregates(second) == expected, second.counted_losses()


def test_a_stopped_pipeline_is_not_captured_and_the_command_says_so(tmp_path: Path) -> None:
    pipeline = Pipeline(shards=1)  # never started
    try:
        path = tmp_path / "never.cap"
        result = pipeline.pystatsd("capture", "--duration", "1", str(path))
        assert result.returncode == 1
        assert result.stderr.strip() == (f"capture: the pipeline in {pipeline.run_dir} is not running (no supervisord "
                                         "answers on its supervisor.sock): nothing to capture")
        assert not path.exists()
    finally:
        pipeline.sock.close()
        pipeline.cleanup()


def test_a_capture_goes_on_across_a_restart_of_the_receiver_in_place_missing_nothing(tmp_path: Path) -> None:
    path = tmp_path / "restart.cap"
    with Pipeline(shards=1) as pipeline:
        capture = started_capture(pipeline, path, "--duration", "10")
        before = [f"before:{n}|c" for n in range(20)]
        after = [f"after:{n}|c" for n in range(20)]
        for datagram in before:
            pipeline.send(datagram, pipeline.statsd_port)
        # Datagrams all through the restart: those the kernel queues while the new image starts are its first read.
        restart = subprocess.Popen([VENV_BIN / "pystatsd", "restart", "receiver", "-c", str(pipeline.config_path),
                                    "--run-dir", str(pipeline.run_dir)], env=pipeline.env, stdout=subprocess.DEVNULL)
        during: list[str] = []
        while restart.poll() is None and len(during) < 4000:
            during.append(f"during:{len(during)}|c")
            pipeline.send(during[-1], pipeline.statsd_port)
            time.sleep(0.002)
        assert restart.wait(60) == 0
        for datagram in after:
            pipeline.send(datagram, pipeline.statsd_port)
        _, err = capture.communicate(timeout=30)
        assert capture.returncode == 0, err
        # The restarted image said hello anew (the first hello was read by started_capture).
        assert err.count("capturing what receiver reads on") == 1, err
        assert "dropped" not in err and "no end" not in err, err
    records, trailer = read_records(path)
    assert [r.payload.decode() for r in records] == before + during + after
    assert trailer["dropped"] == 0
