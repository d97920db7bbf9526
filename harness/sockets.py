"""What a test's client socket can tell about the server at the other end."""

from __future__ import annotations

import select
import socket


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
