"""The receiver's side of ``pystatsd capture``: what it reads, before parsing, to the command's socket.

Without a capture request (stages.rundir.capture_request) a read costs one attribute check, and the
request file is looked at no more than every CHECK_EVERY_SECS. While a request holds, each burst read
from a socket goes, as it was read, in one message to the command's PULL socket
(stages.common.capture_wire), sent without blocking: what the command's queue has no room for is
dropped and counted, and every message says how many so far. A stream connection gets a number of
this session's; its last message says ``closed``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq

from stages.common import capture_wire
from stages.rundir.capture_request import CaptureRequest, CaptureWatch

log = logging.getLogger(__name__)

#: How long an idle receiver sleeps at most: it looks for a request (or its end) when it wakes, and a
#: capture begins, and ends, within this of the command's asking. Twice a second costs nothing measurable.
IDLE_WAKE_SECS = 0.5
#: Messages (bursts) queued for the command before the next ones are dropped.
QUEUE_MESSAGES = 1000
#: How long the end of a capture waits for room in the queue, and then for the command to take it.
END_SECS = 1.0


class CaptureSession:
    """Sending to one request's socket, from its start to its end."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], request: CaptureRequest, receiver: str,
                 listeners: list[Any]) -> None:
        self.request = request
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, QUEUE_MESSAGES)
        self.push.connect(request.endpoint)
        self.receiver = receiver
        # Another session of this receiver (after a restart in place) numbers its connections anew.
        self.session = f"{receiver}/{os.getpid()}/{time.time_ns()}"
        #: (listener, fd) → the connection read there and its number: an fd is reused by a later connection.
        self.connections: dict[tuple[int, int], tuple[Any, int]] = {}
        self.numbered = 0
        self.dropped = 0
        self.send({"hello": [listener.url for listener in listeners if self.wants(listener)]})

    def wants(self, listener: Any) -> bool:
        return self.request.listener is None or listener.url == self.request.listener

    def read(self, listener: Any, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        """``listener.read`` and what it gave sent on."""
        payloads: list[bytes]
        if not self.wants(listener):
            payloads = listener.read(fd, limit, bad)
            return payloads
        # A stream listener's connections (fd → its Connection): which connection a read came from.
        connections = getattr(listener, "connections", None)
        if connections is None:
            payloads = listener.read(fd, limit, bad)
            if payloads:
                self.burst(listener.url, capture_wire.DATAGRAM, 0, False, payloads)
            return payloads
        before = connections.get(fd)
        payloads = listener.read(fd, limit, bad)
        if before is None:
            return payloads  # the listening socket: new connections (evicted ones' last lines are not captured)
        key = (id(listener), fd)
        known = self.connections.get(key)
        if known is None or known[0] is not before:
            self.numbered += 1
            known = self.connections[key] = (before, self.numbered)
        closed = connections.get(fd) is not before
        if closed:
            del self.connections[key]
        if payloads or closed:
            self.burst(listener.url, capture_wire.STREAM, known[1], closed, payloads)
        return payloads

    def burst(self, url: str, kind: str, connection: int, closed: bool, payloads: list[bytes]) -> None:
        head = {"burst": url, "kind": kind, "connection": connection, "closed": closed, "time": time.time()}
        if not self.send(head, payloads):
            self.dropped += len(payloads)

    def send(self, head: dict[str, Any], payloads: list[bytes] | None = None) -> bool:
        """Hand a message to ZeroMQ without blocking; False when its queue is full."""
        head.update(receiver=self.receiver, session=self.session, dropped=self.dropped)
        try:
            self.push.send_multipart(capture_wire.encode(head, payloads), flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def end(self) -> bool:
        """Say the capture ended here (with what was dropped); False while the queue has no room for it."""
        return self.send({"end": True})

    def close(self) -> None:
        # What is queued still goes if the command takes it soon; a command gone does not hold the stop up long.
        self.push.close(linger=int(END_SECS * 1000))


class CaptureTap:
    """Whether a capture runs, and reading through its session when one does."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, receiver: str) -> None:
        self.ctx = ctx
        self.receiver = receiver
        self.watch = CaptureWatch(run_dir)
        self.session: CaptureSession | None = None
        #: A session whose end message waits for room in its queue, and until when it may.
        self.ending: list[tuple[CaptureSession, float]] = []

    def read(self, listener: Any, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        """What ``listener`` has waiting on ``fd``, as ``listener.read``; sent on while a capture runs."""
        session = self.session
        if session is None:
            payloads: list[bytes] = listener.read(fd, limit, bad)
            return payloads
        return session.read(listener, fd, limit, bad)

    def follow(self, now: float, listeners: list[Any]) -> None:
        """Begin or end a session as the request file says (looked at every CHECK_EVERY_SECS at most)."""
        request = self.watch.current(now)
        session = self.session
        if session is not None and (request is None or request.id != session.request.id):
            self.session = None
            self.ending.append((session, now + END_SECS))
            log.info("Capture %s ended: sent for %s, dropped %d payloads", session.request.id,
                     session.request.listener or "every listener", session.dropped)
        if request is not None and self.session is None:
            self.session = CaptureSession(self.ctx, request, self.receiver, listeners)
            log.info("Capture %s began: sending what %s reads to pid %d", request.id,
                     request.listener or "every listener", request.pid)
        if self.ending:
            self.ending = [(s, until) for s, until in self.ending if not self._ended(s, until, now)]

    @staticmethod
    def _ended(session: CaptureSession, until: float, now: float) -> bool:
        if session.end() or now >= until:
            session.close()
            return True
        return False

    def close(self) -> None:
        """At a stop or a restart in place: end every session (a restarted image begins anew)."""
        if self.session is not None:
            self.ending.append((self.session, 0.0))
            self.session = None
        for session, _ in self.ending:
            session.end()
            session.close()
        self.ending = []
