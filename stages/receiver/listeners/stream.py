"""Listeners over a byte stream (TCP, Unix stream): newline-delimited metrics, many connections at once.

Every connection is non-blocking and read from the receiver's one loop, so an idle or half-open
connection holds nothing but a file descriptor (and TCP keepalive reaps a peer that vanished). A
connection hands on only complete lines; a line longer than :data:`MAX_LINE_BYTES` is dropped and
counted (``line_too_long``), and what a closing peer leaves without a final newline is its last line.

Connections are bounded (:class:`~stages.receiver.listeners.connections.StreamConnections`): one idle for
``idle_timeout`` is closed; a new one beyond :data:`MAX_CONNECTIONS`, or beyond its peer's
``max_per_peer``, is admitted by closing the longest-idle connection of that limit, and refused only
when every one of them sent something within :data:`EVICTABLE_AFTER_SECS`. Every close and refusal
is counted by reason. A connection the receiver closes first has what is waiting read: its complete
lines are kept, and an unfinished last line is counted (``unfinished_line``), never handed on half.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict
from typing import Any, Self

from stages.receiver.listeners.bound import BoundListener
from stages.receiver.listeners.connections import StreamConnections

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 65536
#: Connections one listener holds at once (fds are finite); a new one beyond it takes the longest-idle
#: one's place.
MAX_CONNECTIONS = 1024
#: A connection that sent something this recently is busy: it is never closed to make room for a new one.
EVICTABLE_AFTER_SECS = 1.0
READ_BYTES = 65536
#: Reads given to a connection about to be closed, for what it sent last (64 KiB each): bounded, as it
#: may still be sending.
READS_BEFORE_CLOSE = 16


class Connection:
    """One peer's socket and the part of a line it has sent so far."""

    __slots__ = ("sock", "peer", "pending", "discarding", "last_active")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.pending = b""
        #: True while skipping the rest of a line that was already too long.
        self.discarding = False
        #: time.monotonic() of its accept or its last read that brought data.
        self.last_active = time.monotonic()

    def feed(self, data: bytes, bad: dict[str, int]) -> bytes:
        """The complete lines that ``data`` finishes; keeps the unfinished rest."""
        buffer = self.pending + data
        cut = buffer.rfind(b"\n")
        if cut < 0:
            self.pending = self._bounded(buffer, bad)
            return b""
        complete, rest = buffer[: cut + 1], buffer[cut + 1:]
        # Only the first line can have begun in an earlier read, so only it can be too long here.
        first_end = complete.find(b"\n")
        if self.discarding or first_end > MAX_LINE_BYTES:
            if not self.discarding:
                bad["line_too_long"] = bad.get("line_too_long", 0) + 1
            complete = complete[first_end + 1:]
            self.discarding = False
        self.pending = self._bounded(rest, bad)
        return complete

    def _bounded(self, rest: bytes, bad: dict[str, int]) -> bytes:
        if len(rest) <= MAX_LINE_BYTES and not self.discarding:
            return rest
        if not self.discarding:
            bad["line_too_long"] = bad.get("line_too_long", 0) + 1
            self.discarding = True
        return b""

    def last_line(self) -> bytes:
        """What is left when the peer closes: its final line if it sent no newline after it."""
        rest, self.pending = self.pending, b""
        return b"" if self.discarding else rest


class StreamListener(BoundListener):
    """A listening stream socket and its connections; a kind of it names its :attr:`family` of addresses."""

    socket_type = socket.SOCK_STREAM

    @classmethod
    def prepare(cls, sock: socket.socket, receive_buffer_bytes: int, url: str) -> None:
        # SO_REUSEADDR: a restarted receiver can bind while the last one's connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    @classmethod
    def on_socket(cls, url: str, sock: socket.socket, streams: StreamConnections) -> Self:
        return cls(url, sock, streams)

    @classmethod
    def adopt(cls, url: str, held: dict[str, Any], receive_buffer_bytes: int, streams: StreamConnections) -> Self:
        """The listener a previous receiver of this process handed over (:meth:`hand_over`): the same
        listening socket and connections, each with the part of a line it had sent (idle from now)."""
        listener = cls(url, socket.socket(fileno=held["server"]), streams)
        for fd, pending, discarding in held["connections"]:
            sock = socket.socket(fileno=fd)
            connection = Connection(sock, listener.family.peer(sock))
            connection.pending, connection.discarding = bytes.fromhex(pending), discarding
            listener._add(fd, connection)
        return listener

    def hand_over(self) -> dict[str, Any]:
        """Keep the sockets open across an exec (connections and queued data with them); what :meth:`adopt` needs."""
        self.server.set_inheritable(True)
        for connection in self.connections.values():
            connection.sock.set_inheritable(True)
        return {"server": self.server.fileno(),
                "connections": [[fd, c.pending.hex(), c.discarding] for fd, c in self.connections.items()]}

    def __init__(self, url: str, server: socket.socket, streams: StreamConnections) -> None:
        self.url = url
        self.server = server
        self.server.setblocking(False)
        self.server.listen(128)
        self.streams = streams
        #: fd → connection, the longest idle first (a read that brings data moves it to the end).
        self.connections: OrderedDict[int, Connection] = OrderedDict()
        #: peer → its connections, in the same order.
        self.by_peer: dict[str, OrderedDict[int, Connection]] = {}
        #: True when sockets were added or removed since the receiver last asked for ``fds``.
        self.changed = False

    def fds(self) -> list[int]:
        self.changed = False
        return [self.server.fileno(), *self.connections]

    def read(self, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        payloads: list[bytes] = []
        if fd == self.server.fileno():
            self._accept(limit, payloads, bad)
        else:
            self._receive(fd, payloads, bad)
        return payloads

    def next_expiry(self) -> float | None:
        """Seconds until the longest-idle connection has idled ``idle_timeout`` (0 when it has); None when
        nothing can expire."""
        timeout = self.streams.idle_timeout
        if not timeout or not self.connections:
            return None
        idlest = next(iter(self.connections.values()))
        return max(0.0, idlest.last_active + timeout - time.monotonic())

    def expire(self, bad: dict[str, int]) -> list[bytes]:
        """Close every connection idle for ``idle_timeout`` (counted ``idle_timeout``); what they sent last."""
        payloads: list[bytes] = []
        timeout = self.streams.idle_timeout
        if timeout:
            while self._close_idlest(self.connections, timeout, "idle_timeout", payloads, bad):
                pass
        return payloads

    def _receive(self, fd: int, payloads: list[bytes], bad: dict[str, int]) -> bool:
        """Read once from connection ``fd`` into ``payloads``; False when nothing more is waiting."""
        connection = self.connections.get(fd)
        if connection is None:
            return False
        try:
            data = connection.sock.recv(READ_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close(fd)
            last = connection.last_line()
            if last:
                payloads.append(last)
            return False
        connection.last_active = time.monotonic()
        self.connections.move_to_end(fd)
        self.by_peer[connection.peer].move_to_end(fd)
        complete = connection.feed(data, bad)
        if complete:
            payloads.append(complete)
        return True

    def _accept(self, limit: int, payloads: list[bytes], bad: dict[str, int]) -> None:
        """Take up to ``limit`` new connections, each admitted or refused (counted) at once: none is
        left waiting in the kernel's queue while the loop looks elsewhere."""
        for _ in range(limit):
            try:
                sock, _ = self.server.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            peer = self.family.peer(sock)
            refused = self._make_room(peer, payloads, bad)
            if refused:
                self.streams.count_refused(refused)
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._add(sock.fileno(), Connection(sock, peer))

    def _make_room(self, peer: str, payloads: list[bytes], bad: dict[str, int]) -> str | None:
        """Room for one more connection of ``peer``: at its peer's cap, or at :data:`MAX_CONNECTIONS`, the
        longest-idle connection that limit counts is closed; the limit's name when none may be (all busy)."""
        mine = self.by_peer.get(peer)
        cap = self.streams.max_per_peer
        if cap and mine is not None and len(mine) >= cap:
            scope, limit = mine, "peer_limit"
        elif len(self.connections) >= MAX_CONNECTIONS:
            scope, limit = self.connections, "connection_limit"
        else:
            return None
        return None if self._close_idlest(scope, EVICTABLE_AFTER_SECS, limit, payloads, bad) else limit

    def _close_idlest(self, scope: OrderedDict[int, Connection], idle_for: float, reason: str,
                      payloads: list[bytes], bad: dict[str, int]) -> bool:
        """Close the longest-idle connection of ``scope`` if it sent nothing for ``idle_for`` seconds,
        counted as closed for ``reason``, after reading what it sent last; False when none qualifies."""
        for _ in range(len(scope)):
            fd, connection = next(iter(scope.items()))
            if time.monotonic() - connection.last_active < idle_for:
                return False
            for _ in range(READS_BEFORE_CLOSE):
                if not self._receive(fd, payloads, bad):
                    break
            if fd not in self.connections:
                return True  # the peer had closed it: room made, nothing to count
            if connection.last_active > time.monotonic() - idle_for:
                continue  # it sent something after all: no longer idle, the next one may be
            if connection.pending and not connection.discarding:
                # Half a line, which its sender would have finished: not a line to parse, but not lost silently.
                bad["unfinished_line"] = bad.get("unfinished_line", 0) + 1
            self._close(fd)
            self.streams.count_closed(reason)
            return True
        return False

    def _add(self, fd: int, connection: Connection) -> None:
        self.connections[fd] = connection
        self.by_peer.setdefault(connection.peer, OrderedDict())[fd] = connection
        self.streams.open += 1
        self.changed = True

    def _close(self, fd: int) -> None:
        connection = self.connections.pop(fd)
        mine = self.by_peer[connection.peer]
        del mine[fd]
        if not mine:
            del self.by_peer[connection.peer]
        connection.sock.close()
        self.streams.open -= 1
        self.changed = True

    def release(self) -> list[bytes]:
        """Nothing: a connection's unfinished line goes along with the hand-over (:meth:`hand_over`)."""
        return []

    def drain(self, bad: dict[str, int]) -> list[bytes]:
        """What every connection has already sent, its unfinished last lines included (a planned stop)."""
        payloads: list[bytes] = []
        for fd in list(self.connections):
            while self._receive(fd, payloads, bad):
                pass
            connection = self.connections.get(fd)
            if connection is not None:
                last = connection.last_line()
                if last:
                    payloads.append(last)
        return payloads

    def kernel_drops(self) -> int:
        # A stream is flow-controlled: a full receive buffer slows the sender instead of losing data.
        return 0

    def close(self) -> None:
        for fd in list(self.connections):
            self._close(fd)
        self.server.close()
