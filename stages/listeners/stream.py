"""Listeners over a byte stream (TCP, Unix stream): newline-delimited metrics, many connections at once.

Every connection is non-blocking and read from the receiver's one loop, so an idle or half-open
connection holds nothing but a file descriptor (and TCP keepalive reaps a peer that vanished). A
connection hands on only complete lines; a line longer than :data:`MAX_LINE_BYTES` is dropped and
counted (``line_too_long``), and what a closing peer leaves without a final newline is its last line.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, ClassVar, Self

from stages.listeners.family import AddressFamily

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 65536
#: Connections beyond this are closed at once and counted (``connection_refused``): fds are finite.
MAX_CONNECTIONS = 1024
READ_BYTES = 65536


class Connection:
    """One peer's socket and the part of a line it has sent so far."""

    __slots__ = ("sock", "pending", "discarding")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""
        #: True while skipping the rest of a line that was already too long.
        self.discarding = False

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


class StreamListener:
    """A listening stream socket and its connections; a kind of it names its :attr:`family` of addresses."""

    family: ClassVar[AddressFamily]

    @classmethod
    def open(cls, url: str, address: Any, receive_buffer_bytes: int, socket_mode: int, reuse_port: bool) -> Self:
        # SO_REUSEADDR: a restarted receiver can bind while the last one's connections sit in TIME_WAIT.
        return cls(url, cls.family.bind(address, socket.SOCK_STREAM, url, reuse_port, socket_mode,
                                        lambda sock: sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)))

    @classmethod
    def adopt(cls, url: str, held: dict[str, Any], receive_buffer_bytes: int) -> Self:
        """The listener a previous receiver of this process handed over (:meth:`hand_over`): the same
        listening socket and connections, each with the part of a line it had sent."""
        listener = cls(url, socket.socket(fileno=held["server"]))
        for fd, pending, discarding in held["connections"]:
            connection = Connection(socket.socket(fileno=fd))
            connection.pending, connection.discarding = bytes.fromhex(pending), discarding
            listener.connections[fd] = connection
        return listener

    def hand_over(self) -> dict[str, Any]:
        """Keep the sockets open across an exec (connections and queued data with them); what :meth:`adopt` needs."""
        self.server.set_inheritable(True)
        for connection in self.connections.values():
            connection.sock.set_inheritable(True)
        return {"server": self.server.fileno(),
                "connections": [[fd, c.pending.hex(), c.discarding] for fd, c in self.connections.items()]}

    def __init__(self, url: str, server: socket.socket) -> None:
        self.url = url
        self.server = server
        self.server.setblocking(False)
        self.server.listen(128)
        self.connections: dict[int, Connection] = {}
        #: True when sockets were added or removed since the receiver last asked for ``fds``.
        self.changed = False

    def fds(self) -> list[int]:
        self.changed = False
        return [self.server.fileno(), *self.connections]

    def read(self, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        if fd == self.server.fileno():
            self._accept(limit, bad)
            return []
        payloads: list[bytes] = []
        self._receive(fd, payloads, bad)
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
        complete = connection.feed(data, bad)
        if complete:
            payloads.append(complete)
        return True

    def _accept(self, limit: int, bad: dict[str, int]) -> None:
        for _ in range(limit):
            try:
                sock, _ = self.server.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                bad["connection_refused"] = bad.get("connection_refused", 0) + 1
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.connections[sock.fileno()] = Connection(sock)
            self.changed = True

    def _close(self, fd: int) -> None:
        connection = self.connections.pop(fd)
        connection.sock.close()
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
