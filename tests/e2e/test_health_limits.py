"""The health endpoint against slow, many and vanishing clients: a request timeout, no thread per
client, a probe answered whatever the others do, and no traceback for a client that left."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from harness.pipeline import Pipeline
from harness.ports import free_port
from harness.sockets import closed_by_server
from harness.wait import wait_for
from stages.forwarder.probe_server import MAX_CLIENTS, REQUEST_TIMEOUT_SECS

pytestmark = pytest.mark.e2e

PROBE = b"GET /health HTTP/1.0\r\n\r\n"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipeline = Pipeline()
    pipeline.health_port = free_port()  # type: ignore[attr-defined]
    pipeline.config["health_address"] = f"127.0.0.1:{pipeline.health_port}"  # type: ignore[attr-defined]
    pipeline.save_config()
    with pipeline:
        wait_for(lambda: "Health endpoint on" in pipeline.log("forwarder"), 20, "the health endpoint to listen")
        yield pipeline


def connect(pipeline: Pipeline) -> socket.socket:
    return socket.create_connection(("127.0.0.1", pipeline.health_port), timeout=10)  # type: ignore[attr-defined]


def probe(pipeline: Pipeline) -> tuple[int, dict[str, object]]:
    """One GET /health: its status code and JSON body."""
    with connect(pipeline) as sock:
        sock.sendall(PROBE)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def forwarder_pid(pipeline: Pipeline) -> int:
    pid = pipeline.status()["forwarder"][1]
    assert pid is not None
    return pid


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_slow_client_is_cut_after_the_request_timeout(pipeline: Pipeline) -> None:
    silent = connect(pipeline)
    trickle = connect(pipeline)
    started = time.monotonic()
    cut_after: dict[str, float] = {}
    try:
        # One byte a second of a request whose head never ends, for longer than the timeout allows.
        for byte in b"GET /health HTTP/1.0\r\nX-Slow: " + b"a" * int(REQUEST_TIMEOUT_SECS + 5):
            for name, sock in (("silent", silent), ("trickle", trickle)):
                if name not in cut_after and closed_by_server(sock):
                    cut_after[name] = time.monotonic() - started
            if len(cut_after) == 2:
                break
            if "trickle" not in cut_after:
                try:
                    trickle.send(bytes([byte]))
                except OSError:
                    cut_after["trickle"] = time.monotonic() - started
            time.sleep(1)  # the slow client's pace, not a wait for a result
    finally:
        silent.close()
        trickle.close()
    assert cut_after.keys() == {"silent", "trickle"}, f"still open after {time.monotonic() - started:.0f} s"
    for name, after in cut_after.items():
        assert REQUEST_TIMEOUT_SECS - 0.1 <= after <= REQUEST_TIMEOUT_SECS + 2.5, (name, after)
    assert probe(pipeline)[0] in (200, 503)


def test_many_slow_clients_hold_no_thread_and_a_probe_still_answers(pipeline: Pipeline) -> None:
    pid = forwarder_pid(pipeline)
    threads_before, fds_before = threads(pid), descriptors(pid)
    slow = []
    try:
        for _ in range(100):
            sock = connect(pipeline)
            sock.sendall(b"GET /health HTTP/1.0\r\n")  # and never the blank line that ends the head
            slow.append(sock)
        # Answered after every slow client was taken (the server takes connections in order).
        code, body = probe(pipeline)
        assert code in (200, 503) and body["status"] in ("ok", "unhealthy")
        assert threads(pid) <= threads_before, "no thread per client"
        assert descriptors(pid) <= fds_before + MAX_CLIENTS
        wait_for(lambda: sum(not closed_by_server(s) for s in slow) <= MAX_CLIENTS, 10,
                 f"at most {MAX_CLIENTS} slow clients held")
    finally:
        for sock in slow:
            sock.close()


def test_a_client_that_leaves_early_leaves_no_traceback(pipeline: Pipeline) -> None:
    logged = len(pipeline.log("forwarder"))
    for _ in range(20):
        with connect(pipeline) as sock:
            sock.sendall(PROBE)
            # Reset at once, before the answer: writing it meets a broken pipe or a reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with connect(pipeline):
            pass  # gone before it asked anything
    assert probe(pipeline)[0] in (200, 503)
    since = pipeline.log("forwarder")[logged:]
    assert "Traceback" not in since
    assert len(since.splitlines()) <= 1, since
