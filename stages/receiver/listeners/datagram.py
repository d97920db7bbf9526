"""Listeners that read whole datagrams: UDP and Unix datagram sockets share all but the address."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Self

from stages.receiver.listeners.bound import BoundListener
from stages.receiver.listeners.connections import StreamConnections
from stages.receiver.listeners.kernel_drops import socket_drops

recv_many: Callable[[int, int], list[bytes]] | None
try:
    from stages.receiver.listeners._recv_many import recv_many
except ImportError:  # built by pip install where a C compiler is found; sock.recv does the same job
    recv_many = None

log = logging.getLogger(__name__)

#: Larger than any UDP payload (65,507 bytes over IPv4), so a datagram is never cut short.
MAX_DATAGRAM_BYTES = 65536


def set_receive_buffer(sock: socket.socket, requested: int, url: str) -> None:
    """Ask for ``requested`` bytes of receive buffer and log what the kernel really granted."""
    if not requested:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
    # Linux reports twice the usable size it granted; rmem_max caps what an unprivileged process gets.
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < requested:
        log.warning("Listening on %s with a %d-byte receive buffer (asked for %d; raise net.core.rmem_max "
                    "to get it)", url, granted, requested)
    else:
        log.info("Listening on %s with a %d-byte receive buffer", url, granted)


class DatagramListener(BoundListener):
    """One bound, non-blocking datagram socket; a kind of it names its :attr:`family` of addresses."""

    socket_type = socket.SOCK_DGRAM

    @classmethod
    def on_socket(cls, url: str, sock: socket.socket, streams: StreamConnections) -> Self:
        return cls(url, sock)

    @classmethod
    def adopt(cls, url: str, held: dict[str, Any], receive_buffer_bytes: int, streams: StreamConnections) -> Self:
        """The listener a previous receiver of this process handed over (:meth:`hand_over`): the same
        bound socket, with what the kernel queued on it meanwhile."""
        sock = socket.socket(fileno=held["fd"])
        cls.prepare(sock, receive_buffer_bytes, url)
        return cls(url, sock)

    @classmethod
    def prepare(cls, sock: socket.socket, receive_buffer_bytes: int, url: str) -> None:
        """Ask for ``receive_buffer_bytes``: what a UDP socket holds before the kernel drops."""
        set_receive_buffer(sock, receive_buffer_bytes, url)

    def hand_over(self) -> dict[str, Any]:
        """Keep the socket open across an exec (its queue with it); what :meth:`adopt` needs."""
        self.sock.set_inheritable(True)
        return {"fd": self.sock.fileno()}

    def __init__(self, url: str, sock: socket.socket) -> None:
        self.url = url
        self.sock = sock
        self.sock.setblocking(False)
        #: Stream listeners set this when their sockets change; a datagram socket never does.
        self.changed = False
        if recv_many is None:
            log.info("Reading %s one datagram per system call: the C reader (recvmmsg) was not built "
                     "when pystatsd was installed", url)

    def fds(self) -> list[int]:
        return [self.sock.fileno()]

    def read(self, fd: int, limit: int, bad: dict[str, int]) -> list[bytes]:
        """Up to ``limit`` datagrams already waiting, without blocking."""
        if recv_many is not None:
            return recv_many(fd, limit)
        return self.read_each(limit)

    def read_each(self, limit: int) -> list[bytes]:
        """What :meth:`read` gives, one ``recv`` call per datagram."""
        datagrams = []
        recv = self.sock.recv
        for _ in range(limit):
            try:
                datagrams.append(recv(MAX_DATAGRAM_BYTES))
            except BlockingIOError:
                break
        return datagrams

    def release(self) -> list[bytes]:
        """What this listener holds in memory rather than in the kernel (none here): handed on before
        a restart in place, which keeps only the sockets."""
        return []

    def next_expiry(self) -> float | None:
        """A datagram socket has no connections to expire (``streams`` is for those that do)."""
        return None

    def expire(self, bad: dict[str, int]) -> list[bytes]:
        return []

    def drain(self, bad: dict[str, int]) -> list[bytes]:
        """Everything the kernel still holds (a planned stop), then no more."""
        payloads: list[bytes] = []
        while True:
            burst = self.read(self.sock.fileno(), 1024, bad)
            if not burst:
                return payloads
            payloads.extend(burst)

    def kernel_drops(self) -> int:
        return socket_drops([self.sock])

    def close(self) -> None:
        self.sock.close()
