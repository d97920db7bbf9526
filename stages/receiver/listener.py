"""UDP listening sockets: large receive buffers, whole datagrams, non-blocking reads."""

from __future__ import annotations

import ipaddress
import logging
import socket

log = logging.getLogger(__name__)

#: Larger than any UDP payload (65,507 bytes over IPv4), so a datagram is never cut short.
MAX_DATAGRAM_BYTES = 65536


def open_udp(host: str, port: int, receive_buffer_bytes: int) -> socket.socket:
    """A bound, non-blocking UDP socket; logs the receive buffer the kernel really granted."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if receive_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on udp://{host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    # Linux reports twice the usable size it granted; rmem_max caps what an unprivileged process gets.
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if receive_buffer_bytes and granted < receive_buffer_bytes:
        log.warning("Listening on udp://%s:%d with a %d-byte receive buffer (asked for %d; raise "
                    "net.core.rmem_max to get it)", host, port, granted, receive_buffer_bytes)
    else:
        log.info("Listening on udp://%s:%d with a %d-byte receive buffer", host, port, granted)
    if not _is_loopback(address[0]):
        log.warning("udp://%s:%d accepts unauthenticated metrics from the network", host, port)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def read_burst(sock: socket.socket, limit: int) -> list[bytes]:
    """Up to ``limit`` datagrams already waiting on ``sock``, without blocking."""
    datagrams = []
    recv = sock.recv
    for _ in range(limit):
        try:
            datagrams.append(recv(MAX_DATAGRAM_BYTES))
        except BlockingIOError:
            break
    return datagrams
