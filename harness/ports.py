"""Free loopback ports for what a test or the benchmark starts, and whether one accepts connections."""

from __future__ import annotations

import socket


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """``count`` distinct ports the kernel just handed out on 127.0.0.1 (TCP, or UDP with SOCK_DGRAM).

    All are held open until the last is bound, so none is handed out twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, kind)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_udp_port() -> int:
    return free_ports(1, socket.SOCK_DGRAM)[0]


def free_tcp_port() -> int:
    return free_ports(1, socket.SOCK_STREAM)[0]


def accepts_tcp(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
