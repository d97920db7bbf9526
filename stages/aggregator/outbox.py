"""A shard's flushes on their way to the forwarder: a bounded hold queue in front of the PUSH socket.

Flushes wait here while ZeroMQ has no room for them (oldest dropped and counted past ``hold_max``),
and while the forwarder pauses for a restart (:mod:`stages.rundir.pause`): the shard then sends what it
already had, one empty flush marked ``paused`` after it, and holds every later flush until the
pause ends, so nothing is on the way when the forwarder unbinds.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import zmq

from stages.common import contract
from stages.common.clock import SYSTEM_CLOCK, Clock
from stages.common.sharding import forwarder_endpoint
from stages.rundir.pause import PauseWatch, forwarder_pause_path

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: Path, hold_max: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, hold_max)
        self.push.connect(forwarder_endpoint(run_dir))
        self.hold: collections.deque[list[bytes]] = collections.deque()
        self.hold_max = hold_max
        self.dropped = 0
        self.pauses = PauseWatch([forwarder_pause_path(run_dir)])
        #: Whether the ``paused`` flush of the forwarder's current pause has gone out.
        self.marked = False

    def __len__(self) -> int:
        return len(self.hold)

    def put(self, frames: list[bytes]) -> None:
        """Queue one encoded flush behind those held; dropped past ``hold_max`` (the oldest, counted)."""
        if len(self.hold) >= self.hold_max:
            self.hold.popleft()
            self.dropped += 1
            log.warning("Forwarder unreachable and hold queue full: dropped the oldest flush (%d so far)",
                        self.dropped)
        self.hold.append(frames)

    def send(self, marker: contract.FlushHeader) -> None:
        """Hand on what ZeroMQ takes now, minding the forwarder's pause; ``marker`` is the ``paused``
        flush sent when a pause is first seen (its seq the next flush's: it is in no sequence)."""
        paused = bool(self.pauses.current(self.clock.time()))
        if not paused and self.marked:
            self.marked = False
            log.info("The forwarder's pause ended: sending the %d flushes held for it", len(self.hold))
        if paused and self.marked:
            return
        if not self._send_held():
            return
        if paused:
            try:
                self.push.send_multipart(contract.encode_flush(marker, []), zmq.NOBLOCK)
            except zmq.Again:
                return
            self.marked = True
            log.info("The forwarder pauses for a restart: holding this shard's flushes until it is back")

    def send_all(self) -> None:
        """Hand on what ZeroMQ takes now, a pause or not (the shard stops: its queue goes, or is lost)."""
        self._send_held()

    def wait_for_room(self, timeout_ms: int) -> None:
        """Until ZeroMQ can take a flush again, or ``timeout_ms`` passed (no forwarder connected)."""
        self.push.poll(timeout_ms, zmq.POLLOUT)

    def _send_held(self) -> bool:
        """Send the held flushes in order while ZeroMQ takes them; True when none is left."""
        while self.hold:
            try:
                # Not copied: a flush body is megabytes, and ZeroMQ holds it until it is written out.
                self.push.send_multipart(self.hold[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return False
            self.hold.popleft()
        return True

    def close(self, linger_ms: int) -> None:
        self.push.setsockopt(zmq.LINGER, linger_ms)
        self.push.close()
