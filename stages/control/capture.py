"""``pystatsd capture``: what the running receivers read, before parsing, into a capture file.

The command binds a PULL socket in the run directory and asks through ``capture.json``
(stages.rundir.capture_request); each receiver answers ``hello`` within a tenth of a second and then
pushes every burst it reads (stages.receiver.capture_tap). Each payload becomes a record of the file
(stages.control.capture_file) with its arrival time, listener and, for a stream, its connection. The
capture ends after ``duration``, at ``max_bytes`` (the file never grows past it) or on Ctrl-C; its
trailer says which, and how many payloads the receivers dropped because this command read too slowly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import zmq

from stages import __version__
from stages.common import capture_wire, supervisor_rpc
from stages.common.process_names import RECEIVER, is_process_of
from stages.control.capture_file import CLOSE, DATAGRAM, STREAM, CaptureWriter
from stages.rundir.capture_request import CaptureRequest, capture_endpoint, end_request, read_request, write_request
from stages.rundir.private_file import open_private

#: The default bound of a capture file.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: How long the receivers have to answer the request (they look for it every tenth of a second).
ANSWER_SECS = 3.0
#: How long after the end the receivers have to send what they read before they saw it, and their end.
END_SECS = 1.5
#: What the command's queue holds before the receivers' own queues fill and they drop.
QUEUE_MESSAGES = 1000
#: Room kept for the last block's framing and the trailer, so the file stays within --max-bytes.
TRAILER_ROOM = 4096


class CaptureError(Exception):
    """The capture could not be made; the message says why."""


@dataclass
class Capture:
    """One capture's progress: what was written, each receiver's word, why it ended."""

    writer: CaptureWriter
    max_bytes: int
    #: receiver → {"listeners": [...], "dropped": N, "ended": bool}
    receivers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (receiver session, its connection number) → the file's connection number
    connections: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (receiver, its session) → what it dropped so far (a receiver restarted in place begins a session anew)
    session_drops: dict[tuple[str, str], int] = field(default_factory=dict)
    ended: str | None = None
    #: payloads that came after --max-bytes stopped the file
    left_out: int = 0

    def take(self, frames: list[bytes], err: TextIO) -> None:
        try:
            head, payloads = capture_wire.decode(frames)
        except ValueError:
            return  # nothing a receiver sends; the socket is private to this user
        name = head["receiver"]
        seen = self.receivers.setdefault(name, {"listeners": [], "dropped": 0, "ended": False})
        session = (name, str(head.get("session")))
        self.session_drops[session] = max(self.session_drops.get(session, 0), int(head.get("dropped", 0)))
        seen["dropped"] = sum(n for (receiver, _), n in self.session_drops.items() if receiver == name)
        if "hello" in head:
            seen["listeners"], seen["ended"] = list(head["hello"]), False
            print(f"capturing what {name} reads on {', '.join(seen['listeners']) or 'no listener asked for'}",
                  file=err, flush=True)
        elif head.get("end"):
            seen["ended"] = True
        elif "burst" in head:
            self.burst(head, payloads)

    def burst(self, head: dict[str, Any], payloads: list[bytes]) -> None:
        arrived, url = float(head["time"]), str(head["burst"])
        stream = head["kind"] == capture_wire.STREAM
        connection = 0
        if stream:
            key = (str(head["session"]), int(head["connection"]))
            connection = self.connections.setdefault(key, len(self.connections) + 1)
        for index, payload in enumerate(payloads):
            if not self.room_for(len(payload)):
                self.left_out += len(payloads) - index
                return
            self.writer.add(STREAM if stream else DATAGRAM, arrived, url, connection, payload)
        if stream and head.get("closed") and self.room_for(0):
            self.writer.add(CLOSE, arrived, url, connection)

    def room_for(self, length: int) -> bool:
        """Whether a record of ``length`` bytes may still be written without the file passing max_bytes."""
        if self.ended != "max_bytes" and (self.writer.size + len(self.writer.pending) + length + 64 + TRAILER_ROOM
                                          <= self.max_bytes):
            return True
        self.ended = "max_bytes"
        return False

    @property
    def dropped(self) -> int:
        return sum(int(seen["dropped"]) for seen in self.receivers.values())

    def trailer(self, duration: float) -> dict[str, Any]:
        return {"ended": self.ended or "duration", "duration": duration, "dropped": self.dropped,
                "left_out": self.left_out, "receivers": self.receivers}


def running_receivers(run_dir: Path) -> list[str]:
    """The names of the receivers supervisord runs; CaptureError when the pipeline does not run."""
    infos = supervisor_rpc.call(run_dir, "getAllProcessInfo")
    if not isinstance(infos, list):
        raise CaptureError(f"the pipeline in {run_dir} is not running (no supervisord answers on its "
                           "supervisor.sock): nothing to capture")
    running = [i["name"] for i in infos if is_process_of(i["name"], RECEIVER) and i["statename"] == "RUNNING"]
    if not running:
        raise CaptureError(f"no receiver is running in {run_dir}: nothing to capture")
    return running


def capture(run_dir: Path, path: Path, duration: float, listener: str | None, max_bytes: int,
            err: TextIO) -> Capture:
    """Capture into the new file ``path`` (0600, refused if anything is there, a link too)."""
    expected = running_receivers(run_dir)
    other = read_request(run_dir)
    if other is not None and other.holds(time.time()):
        raise CaptureError(f"another capture runs on this pipeline (pid {other.pid}): one at a time")
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        raise CaptureError(f"{path} exists: a capture writes a new file (remove it or give another name)") from None
    except OSError as exc:
        raise CaptureError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        writer = CaptureWriter(handle, {"started": time.time(), "pystatsd": __version__,
                                        "host": socket.gethostname(), "listener": listener})
        result = Capture(writer, max_bytes)
        try:
            _run(run_dir, result, duration, listener, expected, err)
        except CaptureError:
            os.unlink(path)
            raise
        writer.finish(result.trailer(duration))
        os.fsync(handle.fileno())
    return result


def _run(run_dir: Path, result: Capture, duration: float, listener: str | None, expected: list[str],
         err: TextIO) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, QUEUE_MESSAGES)
    endpoint = capture_endpoint(run_dir, os.getpid())
    try:
        pull.bind(endpoint)
    except zmq.ZMQError as exc:
        pull.close(linger=0)
        ctx.term()
        raise CaptureError(f"cannot take what the receivers send on {endpoint}: {exc}") from None
    start = time.time()
    request = CaptureRequest(uuid.uuid4().hex, endpoint, start + duration + END_SECS, os.getpid(), listener)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        write_request(run_dir, request)
        try:
            _receive(pull, result, start + duration, start + ANSWER_SECS, expected, listener, err)
        except KeyboardInterrupt:
            result.ended = "interrupted"
        end_request(run_dir, request.id)
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: the file is still finished whole
            _receive_ends(pull, result, err)
    finally:
        signal.signal(signal.SIGTERM, previous)
        end_request(run_dir, request.id)
        pull.close(linger=0)
        ctx.term()
        with contextlib.suppress(OSError):
            os.unlink(endpoint.removeprefix("ipc://"))


def _receive(pull: zmq.Socket[bytes], result: Capture, until: float, answer_by: float, expected: list[str],
             listener: str | None, err: TextIO) -> None:
    """Take messages until ``until`` or max_bytes; CaptureError when no receiver answers by ``answer_by``."""
    answered = False
    while result.ended is None:
        now = time.time()
        if now >= until:
            return
        if not answered and (now >= answer_by or len(result.receivers) >= len(expected)):
            _check_answers(result, listener, expected)
            answered = True
        if pull.poll(int(min(until - now, 0.1) * 1000) + 1):
            result.take(pull.recv_multipart(), err)


def _check_answers(result: Capture, listener: str | None, expected: list[str]) -> None:
    if not result.receivers:
        raise CaptureError(f"no receiver answered the capture request in {ANSWER_SECS:g} s (running: "
                           f"{', '.join(expected)}): is the pipeline stopping?")
    heard = sorted({url for seen in result.receivers.values() for url in seen["listeners"]})
    if listener is not None and listener not in heard:
        raise CaptureError(f"no receiver listens on {listener}: --listener takes one of the config's listeners")


def _receive_ends(pull: zmq.Socket[bytes], result: Capture, err: TextIO) -> None:
    """What the receivers read before they saw the request end, and their ends, for up to END_SECS."""
    deadline = time.monotonic() + END_SECS
    while not all(seen["ended"] for seen in result.receivers.values()):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if pull.poll(int(left * 1000) + 1):
            result.take(pull.recv_multipart(), err)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def summary(path: Path, result: Capture) -> list[str]:
    """What the command says at the end (stderr)."""
    lines = [f"captured {result.writer.records} payloads ({result.writer.size} bytes) into {path}"]
    if result.ended == "max_bytes":
        lines.append(f"stopped at --max-bytes {result.max_bytes}: the file holds what came before "
                     f"({result.left_out} payloads after it were left out)")
    elif result.ended == "interrupted":
        lines.append("stopped when interrupted: the file holds what came before")
    if result.dropped:
        per = ", ".join(f"{name} {seen['dropped']}" for name, seen in sorted(result.receivers.items()))
        lines.append(f"the receivers dropped {result.dropped} payloads this command did not take in time "
                     f"({per}): the capture misses them, and its trailer says so")
    silent = sorted(name for name, seen in result.receivers.items() if not seen["ended"])
    if silent:
        lines.append(f"{', '.join(silent)} sent no end: what it dropped last is not known")
    return lines
