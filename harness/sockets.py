"""Test sockets: a UDP one to receive on, and what a client socket can tell about the server at the other end."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def loopback_udp(timeout: float | None) -> Iterator[socket.socket]:
    """A UDP socket bound to a free loopback port (its ``recv`` waiting at most ``timeout``), closed after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        yield sock
    finally:
        sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed this connection (EOF, or a reset when it closed it unread), without waiting."""
    poll = select.poll()  # not select.select: a test's descriptors may go past 1024
    poll.register(sock, select.POLLIN)
    if not poll.poll(0):
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True
